//! A prompt's products with 4-bit panels, and its attention, on AMX tiles in bf16, for
//! CPUs with AMX-BF16 (see [`attend`] for the attention).
//!
//! The VNNI kernel of [`super::panels`] sums each block of 32 inputs in integers and
//! must scale every block's sums in floats; on tiles that scaling would leave the tile
//! unit idle (an earlier `tdpbssd` kernel was slower than VNNI for that reason). Here
//! the scales go into the weights instead: each panel (16 weight rows) is widened once a
//! product into bf16 values `d·q + o`, block by block, in the layout `tdpbf16ps` reads
//! (a tile row is one pair of inputs for the 16 rows, `[pair][row][2]`). The input rows
//! are rounded to bf16 once, and a tile of 32 input rows × 2 panels sums whole rows in
//! f32 inside the tiles: four `tdpbf16ps` a block, 16×16×32 multiply-adds each, and the
//! sums leave the tiles once, as the output.
//!
//! The widening costs a few instructions per weight and runs once per panel and
//! product, so it pays off over many input rows; a prompt's product takes this path
//! from [`MIN_ROWS`] rows on. bf16 keeps 8 bits of each weight's and input's mantissa,
//! finer than the 4-bit weights and about as fine as the VNNI kernel's 8-bit inputs.
//!
//! The embedder's int8 layers need none of that: their sums run over whole rows with
//! one scale per row and per column, so [`sums_i8`] sums bytes in integers on the
//! tiles (`tdpbusd`, with AMX-INT8) and leaves the scaling to [`super::int8`].
//!
//! Linux hands out AMX's tile registers only to a process that asks for them
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] and [`int8_available`] ask once.
#![allow(unsafe_code)]

use half::f16;

/// Inputs of one block, and of one tile row: 32 bf16 values fill its 64 bytes.
pub(super) const BLOCK: usize = 32;
/// Rows of a tile: input rows of an A tile, weight rows (a panel) of a B tile.
pub(super) const TILE: usize = 16;
/// bf16 values of a panel's block in pairs: 16 pairs × 16 rows × 2.
pub(super) const BLOCK_VALUES: usize = BLOCK * TILE;
/// Bytes of a panel's block of nibbles (as [`super::panels`] lays them out).
pub(super) const PACKED_BLOCK: usize = BLOCK * TILE / 2;
/// Input rows a tile of the kernel covers (two A tiles).
pub(super) const ROWS: usize = 2 * TILE;
/// Input rows from which a product takes this path.
pub(super) const MIN_ROWS: usize = 64;

/// A block's offsets: `scale·d` per row (Q4_0's `-8·d`) or its own per row (Q4_1's).
#[derive(Clone, Copy)]
pub(super) enum Offsets<'a> {
    Scaled(f32),
    Given(&'a [f16]),
}

/// Whether this CPU runs the tile kernel, and Linux lets this process use the tiles.
pub(super) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vbmi")
                && std::is_x86_feature_detected!("avx512bf16")
                && x86::amx_bf16()
                && x86::request_tiles()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Whether this CPU has AMX-INT8 (and AVX-512 F and BW, for the work around the
/// tiles), and Linux lets this process use the tiles: what [`sums_i8`] needs.
pub(super) fn int8_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && x86::amx_int8()
                && x86::request_tiles()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Inputs of one step of [`sums_i8`]: a tile row of bytes.
pub(super) const I8_STEP: usize = 64;

/// Sums of [`sums_i8`] for [`ROWS`] rows and two panels: row `r`, column `c` of the
/// pair at `r · 32 + c`.
pub(super) type PairSums = [i32; ROWS * 2 * TILE];

/// The integer sums of a dense layer's product for [`ROWS`] input rows on AMX tiles
/// (`tdpbusd`), `Σₖ a[r · depth + k] · w(k, c)`, handed to `each` a pair of panels at a
/// time: the index of the pair's first panel, and the pair's [`PairSums`] (a last
/// panel without a pair leaves the second half of each row as it was).
///
/// `a` holds the rows as unsigned bytes, `depth` (a multiple of [`I8_STEP`]) a row. `b`
/// holds `panels` panels of 16 columns of signed bytes in the order of
/// [`super::int8`]: a panel's runs of four inputs one after another, each run 64 bytes
/// (the four weights of column 0, then of column 1, …). That is the layout a B tile
/// reads, 16 runs (64 inputs) a tile, so the weights are used as they are stored. Each
/// step multiplies two A tiles (16 rows × 64 inputs) by two panels' B tiles into four
/// tiles of 16 × 16 sums, which leave the tiles once a pair, into a buffer small enough
/// to stay in the core's first-level cache while `each` reads it.
pub(super) fn sums_i8(
    a: &[u8],
    depth: usize,
    b: &[i8],
    panels: usize,
    each: impl FnMut(usize, &PairSums),
) {
    assert!(
        int8_available(),
        "this CPU or process cannot use AMX-INT8 tiles"
    );
    assert!(
        depth > 0
            && depth.is_multiple_of(I8_STEP)
            && a.len() >= ROWS * depth
            && b.len() >= panels * depth * TILE,
        "inconsistent operands"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AMX-INT8 and this process may use the tiles
    // (`int8_available`); the sizes are checked above.
    unsafe {
        x86::sums_i8(a, depth, b, panels, each);
    }
}

/// Rounds `m` rows of `x` (`k` wide, a multiple of [`BLOCK`]) to bf16 into `out`, in
/// the kernel's A tiles: tile after tile of 16 rows, each block after block of
/// 16 rows × 32 values, with zero rows added up to a multiple of [`ROWS`]. The tiles
/// are rounded on candle's pool.
pub(super) fn round_rows(x: &[f32], m: usize, k: usize, out: &mut Vec<u16>) {
    assert!(available(), "this CPU or process cannot use AMX tiles");
    assert!(
        k.is_multiple_of(BLOCK) && x.len() == m * k,
        "{m} rows of {k}"
    );
    let rows = m.next_multiple_of(ROWS);
    // `resize` zeroes only what it adds, and a reused buffer keeps old values: every
    // value of rows below `m` is written below, and the padding rows are zeroed there.
    out.resize(rows * k, 0);
    let mut tiles: Vec<&mut [u16]> = out.chunks_exact_mut(TILE * k).collect();
    super::pool::for_each(&mut tiles, |t, tile| {
        let first = t * TILE;
        for row in 0..TILE {
            let Some(x) = x.get((first + row) * k..(first + row + 1) * k) else {
                for j in 0..k / BLOCK {
                    let at = (j * TILE + row) * BLOCK;
                    tile[at..at + BLOCK].fill(0);
                }
                continue;
            };
            for (j, x) in x.chunks_exact(BLOCK).enumerate() {
                let at = (j * TILE + row) * BLOCK;
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512 F, BW and BF16 (checked by `available`);
                // the function checks the lengths.
                unsafe {
                    x86::round(x, &mut tile[at..at + BLOCK]);
                }
            }
        }
    });
}

/// Widens `blocks` blocks of one panel (`packed` nibbles, `scales`, `offsets`) into
/// `out`, [`BLOCK_VALUES`] bf16 values a block in the tiles' pairs.
pub(super) fn widen_panel(
    packed: &[u8],
    scales: &[f16],
    offsets: Offsets<'_>,
    blocks: usize,
    out: &mut [u16],
) {
    assert!(available(), "this CPU or process cannot use AMX tiles");
    assert!(
        packed.len() >= blocks * PACKED_BLOCK
            && scales.len() >= blocks * TILE
            && match offsets {
                Offsets::Scaled(_) => true,
                Offsets::Given(o) => o.len() >= blocks * TILE,
            }
            && out.len() >= blocks * BLOCK_VALUES,
        "a panel of {blocks} blocks"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX-512 F, BW, VBMI and BF16 (checked by `available`); the
    // lengths are checked above.
    unsafe {
        x86::widen(packed, scales, offsets, blocks, out);
    }
}

/// Where a kernel call writes: `out` holds `rows × n` sums, and the call fills columns
/// `first..first + cols` (at most 16 a panel).
pub(super) struct Target {
    pub(super) out: *mut f32,
    pub(super) len: usize,
    pub(super) n: usize,
    pub(super) first: usize,
    pub(super) cols: usize,
}

/// `out[r, first + c] = Σ a[r, ·]·panel[c, ·]` for every input row `r < m` and the
/// panels' columns, from rounded rows `a` (see [`round_rows`]) and widened panels `b`
/// (see [`widen_panel`]; one or two).
///
/// # Safety
/// `target.out` points to `target.len` floats that no other thread touches in columns
/// `first..first + cols` of rows `0..m` meanwhile.
pub(super) unsafe fn product(a: &[u16], m: usize, k: usize, b: &[&[u16]], target: &Target) {
    assert!(available(), "this CPU or process cannot use AMX tiles");
    let blocks = k / BLOCK;
    assert!(
        k.is_multiple_of(BLOCK)
            && a.len() >= m.next_multiple_of(ROWS) * k
            && (1..=2).contains(&b.len())
            && b.iter().all(|b| b.len() >= blocks * BLOCK_VALUES)
            && target.cols <= b.len() * TILE
            && target.first + target.cols <= target.n
            && m * target.n <= target.len,
        "inconsistent operands"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AMX-BF16 and this process may use the tiles (`available`);
    // the sizes are checked above, and the caller owns the columns written.
    unsafe {
        x86::tiles(a, m, k, b, target);
    }
}

/// Keys scored at a time by [`attend`]: two tiles' columns.
const KEYS: usize = 2 * TILE;

/// `out` = causal attention of one head's query rows `q` (64 wide, already scaled) at
/// positions `first..` over the keys and values at positions `..first + rows`, on AMX
/// tiles: row `i` sees positions `..=first + i`. `keys` and `values` come paired as
/// [`super::flash::attend_bf16`] reads them (`[block of 16][dim / 2][position][2]` and
/// `[position / 2][dim][2]`, bf16), reaching whole chunks of 32 positions or more: the
/// values zero past the last position, the keys as the cache holds them there (the
/// softmax masks their scores).
///
/// Each group of 32 rows scores its keys 32 at a time in four tiles (queries × pairs
/// of dims against the keys' pairs), writes the scores to a buffer, takes each row's
/// softmax there in AVX-512 (the powers rounded to bf16 into tiles of 16 rows × 32
/// positions, their sum kept in f32), and sums the powers times the values' pairs in
/// four tiles a half of the dims. Each row's sums are divided by its total at the end.
pub(super) fn attend(q: &[f32], keys: &[u16], values: &[u16], first: usize, out: &mut [f32]) {
    const HD: usize = 64;
    assert!(available(), "this CPU or process cannot use AMX tiles");
    let rows = q.len() / HD;
    let reach = (first + rows).div_ceil(KEYS) * KEYS * HD;
    assert!(
        q.len() == rows * HD
            && out.len() == q.len()
            && keys.len() >= reach
            && values.len() >= reach,
        "inconsistent attention operands"
    );
    SCRATCH.with_borrow_mut(|scratch| {
        for (g, (q, out)) in q
            .chunks(ROWS * HD)
            .zip(out.chunks_mut(ROWS * HD))
            .enumerate()
        {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AMX-BF16 and AVX-512 F, BW and BF16, and this process
            // may use the tiles (`available`); the operands reach every position the
            // group's rows see (checked above).
            unsafe {
                x86::attend_group(q, keys, values, first + g * ROWS, out, scratch);
            }
        }
    });
}

/// [`attend`]'s buffers: a group's queries in bf16, scores, powers and sums.
#[derive(Default)]
struct Scratch {
    queries: Vec<u16>,
    scores: Vec<f32>,
    powers: Vec<u16>,
    totals: Vec<f32>,
    sums: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use half::f16;

    use super::{BLOCK, BLOCK_VALUES, I8_STEP, KEYS, Offsets, PACKED_BLOCK, ROWS, TILE, Target};

    /// CPUID leaf 7's EDX, which reports AMX-BF16, AMX-TILE and AMX-INT8 in bits 22, 24
    /// and 25; 0 where the CPU has no such leaf.
    fn leaf7_edx() -> u32 {
        // SAFETY: CPUID is present on every x86-64 CPU; leaf 7 is read only where the
        // highest leaf reaches it.
        #[allow(unused_unsafe)]
        unsafe {
            if __get_cpuid_max(0).0 < 7 {
                return 0;
            }
            __cpuid_count(7, 0).edx
        }
    }

    /// Whether the CPU has AMX-TILE and AMX-BF16.
    pub(super) fn amx_bf16() -> bool {
        let edx = leaf7_edx();
        edx & (1 << 22) != 0 && edx & (1 << 24) != 0
    }

    /// Whether the CPU has AMX-TILE and AMX-INT8.
    pub(super) fn amx_int8() -> bool {
        let edx = leaf7_edx();
        edx & (1 << 24) != 0 && edx & (1 << 25) != 0
    }

    /// Asks Linux for the tiles' state (`ARCH_REQ_XCOMP_PERM` for `XFEATURE_XTILEDATA`);
    /// without it the first tile instruction kills the process.
    #[cfg(target_os = "linux")]
    pub(super) fn request_tiles() -> bool {
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: a plain system call that only changes which register state this
        // process may use; it reads and writes no memory of ours.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round(x: &[f32], out: &mut [u16]) {
        assert!(x.len() == out.len() && x.len().is_multiple_of(BLOCK));
        for (x, out) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
            // SAFETY: each chunk holds 32 floats and 32 bf16 values.
            unsafe {
                let lo = _mm512_loadu_ps(x.as_ptr());
                let hi = _mm512_loadu_ps(x.as_ptr().add(TILE));
                let pair: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(out.as_mut_ptr().cast(), pair);
            }
        }
    }

    /// Byte `o` of a run's picked nibbles: quarter `o / 16` holds rows 0–7 (even
    /// quarters) or 8–15 (odd ones) of the run's first pair (quarters 0–1: inputs 0 and
    /// 1 of the nibbles' four) or second (2–3: inputs 2 and 3), row after row, a pair a
    /// row.
    const PICK: [u8; 64] = {
        let mut pick = [0; 64];
        let mut o = 0;
        while o < 64 {
            let (quarter, r) = (o / 16, o % 16);
            let row = (quarter % 2) * 8 + r / 2;
            let input = (quarter / 2) * 2 + r % 2;
            pick[o] = (4 * row + input) as u8;
            o += 1;
        }
        pick
    };

    /// # Safety
    /// The CPU has AVX-512 F, BW, VBMI and BF16; the slices hold `blocks` blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512bf16")]
    pub(super) unsafe fn widen(
        packed: &[u8],
        scales: &[f16],
        offsets: Offsets<'_>,
        blocks: usize,
        out: &mut [u16],
    ) {
        // SAFETY: every load and store below lies inside the slices, whose lengths the
        // caller checked for `blocks` blocks.
        unsafe {
            let pick = _mm512_loadu_si512(PICK.as_ptr().cast());
            let low = _mm512_set1_epi8(0xF);
            // Lane `l` of a row's half: row `l / 2` (first half) or `8 + l / 2`.
            let halves = [
                _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0),
                _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
            ];
            let out = out.as_mut_ptr();
            for j in 0..blocks {
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(scales.as_ptr().add(j * TILE).cast()));
                let o = match offsets {
                    Offsets::Scaled(s) => _mm512_mul_ps(d, _mm512_set1_ps(s)),
                    Offsets::Given(o) => {
                        _mm512_cvtph_ps(_mm256_loadu_si256(o.as_ptr().add(j * TILE).cast()))
                    }
                };
                let d = halves.map(|h| _mm512_permutexvar_ps(h, d));
                let o = halves.map(|h| _mm512_permutexvar_ps(h, o));
                for run in 0..BLOCK / 8 {
                    let v =
                        _mm512_loadu_si512(packed.as_ptr().add(j * PACKED_BLOCK + run * 64).cast());
                    let nibbles = [
                        _mm512_and_si512(v, low),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(v), low),
                    ];
                    for (high, nibbles) in nibbles.into_iter().enumerate() {
                        let p = _mm512_permutexvar_epi8(pick, nibbles);
                        let quarters = [
                            _mm512_castsi512_si128(p),
                            _mm512_extracti32x4_epi32::<1>(p),
                            _mm512_extracti32x4_epi32::<2>(p),
                            _mm512_extracti32x4_epi32::<3>(p),
                        ];
                        for pair in 0..2 {
                            let lo = scaled(quarters[2 * pair], d[0], o[0]);
                            let hi = scaled(quarters[2 * pair + 1], d[1], o[1]);
                            let row: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                            // Inputs 8·run + 4·high + 2·pair and the next one.
                            let at = j * BLOCK_VALUES + (4 * run + 2 * high + pair) * BLOCK;
                            _mm512_storeu_si512(out.add(at).cast(), row);
                        }
                    }
                }
            }
        }
    }

    /// `d·q + o` for 16 nibbles `q`, one a byte.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn scaled(q: __m128i, d: __m512, o: __m512) -> __m512 {
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q)), d, o)
    }

    /// The tiles' shapes for `ldtilecfg`: palette 1, every tile 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    macro_rules! load {
        ($t:literal, $p:expr, $stride:expr) => {
            asm!(
                concat!("tileloadd tmm", $t, ", [{0} + {1}*1]"),
                in(reg) $p,
                in(reg) $stride,
                options(nostack, readonly)
            )
        };
    }
    macro_rules! store {
        ($t:literal, $p:expr, $stride:expr) => {
            asm!(
                concat!("tilestored [{0} + {1}*1], tmm", $t),
                in(reg) $p,
                in(reg) $stride,
                options(nostack)
            )
        };
    }
    /// C tile `$c` += A tile `$a` · B tile `$b`: pairs of bf16 summed in f32, or with
    /// `$int8` quads of unsigned (A) by signed (B) bytes summed in i32.
    macro_rules! dot {
        ($int8:expr, $c:literal, $a:literal, $b:literal) => {
            if $int8 {
                asm!(
                    concat!("tdpbusd tmm", $c, ", tmm", $a, ", tmm", $b),
                    options(nostack, nomem)
                )
            } else {
                asm!(
                    concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
                    options(nostack, nomem)
                )
            }
        };
    }

    /// Zeroes C tiles 0–3.
    ///
    /// # Safety
    /// The tiles are configured.
    #[inline(always)]
    unsafe fn clear() {
        // SAFETY: as the caller promises.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
    }

    /// One step of a tile of 2 × 2 C tiles: C tile `2·i + j` += A tile `i` · B tile
    /// `j` (see `dot!` for `INT8`), the A tiles at `a` (rows `a_stride` bytes apart),
    /// the B tiles at `b0` and `b1` (`b_stride`; without `b1`, C tiles 1 and 3 are left
    /// alone). Each load comes
    /// just before its first product: a load waits for the products still reading its
    /// tile's last contents, and this order overlaps those waits best (measured).
    ///
    /// # Safety
    /// The tiles are configured, and each pointer holds 16 rows of 64 bytes at its
    /// stride.
    #[inline(always)]
    unsafe fn step<T, const INT8: bool>(
        a: [*const T; 2],
        a_stride: usize,
        b0: *const T,
        b1: Option<*const T>,
        b_stride: usize,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            load!(4, a[0], a_stride);
            load!(6, b0, b_stride);
            dot!(INT8, 0, 4, 6);
            if let Some(b1) = b1 {
                load!(7, b1, b_stride);
                dot!(INT8, 1, 4, 7);
            }
            load!(5, a[1], a_stride);
            dot!(INT8, 2, 5, 6);
            if b1.is_some() {
                dot!(INT8, 3, 5, 7);
            }
        }
    }

    /// Sums of C tiles 0–3 into `to` at `stride` bytes a row: tile `2·half + panel`,
    /// which holds input rows `16·half..` times the panel's columns, at row `16·half`,
    /// column `16·panel`.
    ///
    /// # Safety
    /// The tiles are configured, and `to` holds them at `stride`.
    unsafe fn put<T>(to: *mut T, stride: usize, panels: usize) {
        let half = 16 * stride;
        // SAFETY: as the caller promises.
        unsafe {
            store!(0, to, stride);
            store!(2, to.byte_add(half), stride);
            if panels == 2 {
                store!(1, to.add(TILE), stride);
                store!(3, to.add(TILE).byte_add(half), stride);
            }
        }
    }

    /// One group of at most 32 query rows of [`super::attend`], at positions `first..`.
    ///
    /// # Safety
    /// The CPU has AMX-BF16 and AVX-512 F, BW and BF16, and the tiles are granted;
    /// `keys` and `values` reach the group's last position rounded up to [`KEYS`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn attend_group(
        q: &[f32],
        keys: &[u16],
        values: &[u16],
        first: usize,
        out: &mut [f32],
        scratch: &mut super::Scratch,
    ) {
        const HD: usize = 64;
        let rows = q.len() / HD;
        let chunks = (first + rows).div_ceil(KEYS);
        let width = chunks * KEYS;
        let super::Scratch {
            queries,
            scores,
            powers,
            totals,
            sums,
        } = scratch;
        queries.clear();
        queries.resize(ROWS * HD, 0);
        // SAFETY: the CPU has AVX-512 F, BW and BF16 (the caller's promise).
        unsafe { round(q, &mut queries[..q.len()]) };
        scores.resize(ROWS * width, 0.0);
        powers.resize(ROWS * width, 0);
        totals.resize(ROWS, 0.0);
        sums.resize(ROWS * HD, 0.0);
        // Elements of a key block's pairs, and of a position pair's row of values.
        let (key_block, value_row) = (TILE * HD, 2 * HD);
        // SAFETY: the tiles are configured first and released last. Query tiles read
        // `queries` (32 rows of 64); key tiles read blocks `..2·chunks` and value tiles
        // position pairs `..16·chunks`, inside the operands (the caller's promise);
        // score tiles land in `scores` (32 rows of `width`), power tiles are read from
        // `powers` (a chunk's 32 rows × 32 positions after another), and the sums land
        // in `sums` (32 rows of 64).
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
            let (qp, kp, vp) = (queries.as_ptr(), keys.as_ptr(), values.as_ptr());
            let sp = scores.as_mut_ptr();
            for c in 0..chunks {
                clear();
                for half in 0..2 {
                    let (dims, pairs) = (half * 2 * TILE, half * TILE * 2 * TILE);
                    let a = [qp.add(dims), qp.add(TILE * HD + dims)];
                    let b = kp.add(2 * c * key_block + pairs);
                    step::<_, false>(a, 2 * HD, b, Some(b.add(key_block)), 64);
                }
                put(sp.add(c * KEYS), 4 * width, 2);
            }
            for r in 0..ROWS {
                let row = &scores[r * width..(r + 1) * width];
                let seen = if r < rows { first + r + 1 } else { 0 };
                totals[r] = softmax_row(row, seen, r, powers);
            }
            let pp = powers.as_ptr();
            for half in 0..2 {
                clear();
                let dims = half * 2 * TILE;
                for c in 0..chunks {
                    let chunk = pp.add(c * ROWS * KEYS);
                    let v = vp.add(c * TILE * value_row + 2 * dims);
                    let a = [chunk, chunk.add(TILE * KEYS)];
                    step::<_, false>(a, 64, v, Some(v.add(2 * TILE)), 2 * value_row);
                }
                put(sums.as_mut_ptr().add(dims), 4 * HD, 2);
            }
            asm!("tilerelease", options(nostack, nomem));
        }
        for (r, out) in out.chunks_exact_mut(HD).enumerate() {
            let scale = 1.0 / totals[r];
            for (o, s) in out.iter_mut().zip(&sums[r * HD..(r + 1) * HD]) {
                *o = s * scale;
            }
        }
    }

    /// The softmax of one row's scores over its first `seen` positions: each power
    /// `e^(s - highest)` rounded to bf16 into row `r` of each chunk's tile of powers
    /// (zero past `seen`), and the powers' sum (in f32, before rounding) returned.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn softmax_row(row: &[f32], seen: usize, r: usize, powers: &mut [u16]) -> f32 {
        use super::super::flash::avx512::{lanes_max, quick_exp};
        let lanes = |at: usize| -> __mmask16 {
            match seen.saturating_sub(at) {
                0 => 0,
                n if n >= TILE => u16::MAX,
                n => (1u16 << n) - 1,
            }
        };
        let vectors = row.len() / TILE;
        let mut high = _mm512_set1_ps(f32::MIN);
        for v in 0..seen.div_ceil(TILE) {
            // SAFETY: vector `v` lies inside `row` (`seen` ≤ its length).
            let x = unsafe { _mm512_maskz_loadu_ps(lanes(v * TILE), row.as_ptr().add(v * TILE)) };
            high = _mm512_mask_max_ps(high, lanes(v * TILE), high, x);
        }
        let high = lanes_max(high);
        let mut total = _mm512_setzero_ps();
        for v in (0..vectors).step_by(2) {
            let mut pair = [_mm512_setzero_ps(); 2];
            for (i, p) in pair.iter_mut().enumerate() {
                let at = (v + i) * TILE;
                // SAFETY: `at + 16` ≤ the row's length, a multiple of 32.
                let x = unsafe { _mm512_loadu_ps(row.as_ptr().add(at)) };
                *p = _mm512_maskz_mov_ps(lanes(at), quick_exp(_mm512_sub_ps(x, high)));
                total = _mm512_add_ps(total, *p);
            }
            // SAFETY: 32 bf16 values are 64 bytes, as the vector of integers is.
            let words: __m512i =
                unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(pair[1], pair[0])) };
            let at = (v / 2 * ROWS + r) * KEYS;
            // SAFETY: chunk `v / 2`'s row `r` lies inside `powers` (32 rows × `width`).
            unsafe { _mm512_storeu_si512(powers.as_mut_ptr().add(at).cast(), words) };
        }
        _mm512_reduce_add_ps(total)
    }

    /// # Safety
    /// As [`super::product`], whose checks have passed.
    pub(super) unsafe fn tiles(a: &[u16], m: usize, k: usize, b: &[&[u16]], t: &Target) {
        let panels = b.len();
        let blocks = k / BLOCK;
        let out_stride = 4 * t.n;
        let mut spill = [0f32; ROWS * 2 * TILE];
        // SAFETY: the tiles are configured first and released last; every tile load
        // reads 16 rows of 64 bytes inside `a` (padded to whole tiles) or a panel, and
        // every store lands inside `out`'s owned columns or in `spill`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
            for first in (0..m).step_by(ROWS) {
                clear();
                let rows = a.as_ptr().add(first * k);
                for j in 0..blocks {
                    let at = j * BLOCK_VALUES;
                    let a = [rows.add(at), rows.add(blocks * BLOCK_VALUES + at)];
                    let second = (panels == 2).then(|| b[1].as_ptr().add(at));
                    step::<_, false>(a, 64, b[0].as_ptr().add(at), second, 64);
                }
                let whole = first + ROWS <= m && t.cols == panels * TILE;
                if whole {
                    put(t.out.add(first * t.n + t.first), out_stride, panels);
                } else {
                    let width = 2 * TILE;
                    put(spill.as_mut_ptr(), 4 * width, panels);
                    for r in 0..ROWS.min(m - first) {
                        let from = &spill[r * width..r * width + t.cols];
                        let to = t.out.add((first + r) * t.n + t.first);
                        std::ptr::copy_nonoverlapping(from.as_ptr(), to, t.cols);
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// [`super::sums_i8`], whose checks it relies on.
    ///
    /// # Safety
    /// The CPU has AMX-INT8, the tiles are granted, and the operands hold what
    /// [`super::sums_i8`] checks.
    pub(super) unsafe fn sums_i8(
        a: &[u8],
        depth: usize,
        b: &[i8],
        panels: usize,
        mut each: impl FnMut(usize, &super::PairSums),
    ) {
        // A panel's weights, and the B tile of a step within them: 16 runs of 64 bytes.
        let (panel, b_step) = (depth * TILE, I8_STEP * TILE);
        let mut sums: super::PairSums = [0; ROWS * 2 * TILE];
        // SAFETY: the tiles are configured first and released last; the A tiles read
        // rows `0..32` of `a` (`depth` bytes apart) and the B tiles whole panels of
        // `b`, inside the slices (the caller's promise); a pair's sums land in `sums`,
        // 32 rows of 32. `each` runs while the tiles stay configured, and no call of it
        // touches them.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
            let (ap, bp) = (a.as_ptr(), b.as_ptr());
            for first in (0..panels).step_by(2) {
                clear();
                let b0 = bp.add(first * panel);
                let b1 = (first + 1 < panels).then(|| b0.add(panel));
                for s in 0..depth / I8_STEP {
                    let a = [ap.add(s * I8_STEP), ap.add(TILE * depth + s * I8_STEP)];
                    let at = s * b_step;
                    step::<_, true>(
                        a.map(|p| p.cast::<i8>()),
                        depth,
                        b0.add(at),
                        b1.map(|b| b.add(at)),
                        I8_STEP,
                    );
                }
                put(
                    sums.as_mut_ptr(),
                    4 * 2 * TILE,
                    panels.min(first + 2) - first,
                );
                each(first, &sums);
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }
}
