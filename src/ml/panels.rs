//! Q4_0 and Q4_1 weights in panels of 16 rows, for CPUs with AVX-512 VNNI or AVX2:
//! every product, a prompt's as well as a decoding step's, is summed in integers, and
//! no weight is ever widened to f32.
//!
//! The inputs are rounded as for [`super::nibbles`] (8 bits per block of 32, scale `e`),
//! and a block still adds `d·e·Σ qⱼ·xⱼ + o·e·Σ xⱼ`, `q` in `0..16`. What changes is the
//! order of the weights. Sixteen weight rows form a panel, and a panel's block of 32
//! inputs is four runs of 64 bytes, each covering 8 inputs: byte `4c + i` of run `t`
//! holds weight `8t + i` of the panel's row `c` in its low nibble and weight `8t + 4 + i`
//! in its high one. One load and two masks thus give two operands of `vpdpbusd`, the
//! weights the unsigned side, with lane `c` summing four products for row `c`; the
//! four input bytes to match are broadcast from the input row. Eight such sums make a
//! block's integer dot products for 16 rows at once, which are then scaled by the
//! block's `d` (one vector of the panel's 16 scales) and the input's `e`. Q4_0's offset
//! `-8·d` enters in integers, as `-8·Σ xⱼ` where the sum starts.
//!
//! The kernel keeps a tile of 4 input rows × 2 panels in registers. Tasks of up to 64
//! input rows × 2 panels are spread over candle's spinning pool. Where a task has many
//! rows, it takes three panels and first widens them to a byte a weight, in the same
//! order (each run's low nibbles, then its high ones), so that its rows load ready
//! operands instead of splitting the same nibbles again for every tile of rows; its
//! tiles are then 4 rows × 3 panels. The last panel of a matrix whose rows are not a
//! multiple of 16 is padded with zero weights and scales.
//!
//! Without VNNI, AVX2 reads each run as two halves of 32 bytes, rows 0–7 and 8–15 of
//! the panel, and goes over a tile half a panel at a time: `vpmaddubsw` sums two
//! products into 16 bits, a block's eight such vectors add up in 16 bits, and one
//! `vpmaddwd` widens the block's sums to 32 bits before they are scaled. A task of many
//! rows widens its pair of panels to bytes first, as the VNNI kernel does, and its
//! tiles of 4 rows load them ready. All kernels, and a portable loop for other CPUs,
//! give the same bits.
#![allow(unsafe_code)]

use half::f16;

use super::amx;
use super::nibbles::{BLOCK, Input, Kind, Q4_0_OFFSET};

/// Weight rows of a panel: one 512-bit vector of 32-bit sums.
const LANES: usize = 16;
/// Inputs covered by one run (four in the low nibbles, four in the high ones).
const RUN: usize = 8;
/// Bytes of a run across a panel.
const RUN_BYTES: usize = LANES * RUN / 2;
/// Bytes of one block of a panel.
const BLOCK_BYTES: usize = BLOCK / RUN * RUN_BYTES;
/// Input rows of the kernel's tile.
const TILE_ROWS: usize = 4;
/// Panels of the kernel's tile.
const TILE_PANELS: usize = 2;
/// Input rows of one task of the pool.
const TASK_ROWS: usize = 64;
/// Input rows and panels of the VNNI kernel's tile where a task's weights come
/// widened ([`Panels::widen`]): with no nibbles to split, 4 rows × 3 panels of sums
/// fit the registers beside their totals, and each broadcast input feeds three
/// panels.
const WIDE_ROWS: usize = 4;
const WIDE_PANELS: usize = 3;
/// Input rows from which a product's tasks read their panels widened to a byte a
/// weight: below this (a decoding step, a short prompt) splitting each run's nibbles
/// in registers as it goes costs less than writing them out first.
const WIDEN_FROM: usize = 16;

/// Refuses an input `x` of other than `m` rows of `k` values, or an `out` of other than
/// `m` rows of `n` values, for the product of `x` and `n × k` weights.
pub(super) fn check_sizes(
    x: &[f32],
    m: usize,
    k: usize,
    out: &[f32],
    n: usize,
) -> Result<(), String> {
    if x.len() != m * k || out.len() != m * n {
        return Err(format!(
            "product of {m}×{k} input and {n}×{k} weights got {} inputs and {} outputs",
            x.len(),
            out.len()
        ));
    }
    Ok(())
}

/// Whether this CPU runs one of the panels' SIMD kernels; where it does not, a prompt
/// is better multiplied by the f32 gemm over dequantized weights.
pub(super) fn available() -> bool {
    Kernel::detect() != Kernel::Portable
}

/// Whether this CPU runs the AVX2 kernel.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// The kernels that multiply a tile of panels, all giving the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 with VNNI: 16 rows a vector, four products a lane an instruction.
    Vnni,
    /// AVX2: 8 rows a vector, pairs of products summed in 16 bits.
    Avx2,
    /// One weight at a time.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if super::int8::vnni() {
                return Kernel::Vnni;
            }
            if avx2() {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// A `[rows, cols]` matrix of 4-bit weights in panels.
pub(super) struct Panels {
    kind: Kind,
    rows: usize,
    cols: usize,
    /// Per panel, per block: the 16 rows' `d`.
    scales: Vec<f16>,
    /// Q4_1's offsets, as `scales`; empty for Q4_0.
    offsets: Vec<f16>,
    /// Per panel, per block: [`BLOCK_BYTES`] bytes.
    packed: Vec<u8>,
}

impl Panels {
    /// Whether rows of `cols` weights are whole blocks, as this layout needs.
    pub(super) fn fits(cols: usize) -> bool {
        cols > 0 && cols.is_multiple_of(BLOCK)
    }

    /// Reads ggml's blocks of `kind` (see [`Kind::blocks`]).
    pub(super) fn from_ggml(
        kind: Kind,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, String> {
        if !Self::fits(cols) {
            return Err(format!("rows of {cols} are not whole blocks"));
        }
        let blocks = kind.blocks(rows, cols, bytes)?;
        let nb = cols / BLOCK;
        let padded = rows.next_multiple_of(LANES);
        let mut m = Self {
            kind,
            rows,
            cols,
            scales: vec![f16::ZERO; padded * nb],
            offsets: if kind == Kind::Q4_1 {
                vec![f16::ZERO; padded * nb]
            } else {
                Vec::new()
            },
            packed: vec![0; padded * cols / 2],
        };
        for block in blocks {
            let s = m.scale_index(block.row, block.j);
            m.scales[s] = block.d;
            if let Some(o) = block.m {
                m.offsets[s] = o;
            }
            // Weights `w` and `w + 16` of the block sit in runs `w / 8` and `w / 8 + 2`.
            let (first, _) = m.nibble(block.row, block.j, 0);
            let packed = &mut m.packed[first..first + (BLOCK / RUN - 1) * RUN_BYTES + RUN / 2];
            for (w, &q) in block.qs.iter().enumerate() {
                let (run, i) = (w / RUN, w % RUN);
                let shift = 4 * (i / 4);
                packed[run * RUN_BYTES + i % 4] |= (q & 0xF) << shift;
                packed[(run + 2) * RUN_BYTES + i % 4] |= (q >> 4) << shift;
            }
        }
        Ok(m)
    }

    fn per_row(&self) -> usize {
        self.cols / BLOCK
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(LANES)
    }

    /// Where `d` (and Q4_1's `o`) of block `j` of `row` is.
    fn scale_index(&self, row: usize, j: usize) -> usize {
        ((row / LANES) * self.per_row() + j) * LANES + row % LANES
    }

    /// The byte and shift of weight `w` of block `j` of `row`.
    fn nibble(&self, row: usize, j: usize, w: usize) -> (usize, usize) {
        let block = (row / LANES) * self.per_row() + j;
        let (run, i) = (w / RUN, w % RUN);
        let byte = block * BLOCK_BYTES + run * RUN_BYTES + (row % LANES) * (RUN / 2) + i % 4;
        (byte, 4 * (i / 4))
    }

    /// `(d, o)` of block `j` of `row`.
    fn block(&self, row: usize, j: usize) -> (f32, f32) {
        let s = self.scale_index(row, j);
        let d = self.scales[s].to_f32();
        let o = match self.kind {
            Kind::Q4_0 => Q4_0_OFFSET * d,
            Kind::Q4_1 => self.offsets[s].to_f32(),
        };
        (d, o)
    }

    /// Blocks `range` (counted over all rows, as ggml's are) as f32, into `out`.
    pub(super) fn dequantize(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        let nb = self.per_row();
        for (b, out) in range.zip(out.chunks_exact_mut(BLOCK)) {
            let (row, j) = (b / nb, b % nb);
            let (d, o) = self.block(row, j);
            for (w, v) in out.iter_mut().enumerate() {
                let (byte, shift) = self.nibble(row, j, w);
                *v = o + d * f32::from((self.packed[byte] >> shift) & 0xF);
            }
        }
    }

    /// `out[m × rows] = x[m × cols] · selfᵀ`, the input rounded to 8 bits per block.
    pub(super) fn product(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<(), String> {
        let k = self.cols;
        self.check_sizes(x, m, out)?;
        let kernel = Kernel::detect();
        INPUT.with_borrow_mut(|input| {
            input.quantize(x, m, k);
            let input = &*input;
            let out = Output::new(out);
            let wide = kernel != Kernel::Portable && m >= WIDEN_FROM;
            let group = match kernel {
                Kernel::Vnni if wide => WIDE_PANELS,
                _ => TILE_PANELS,
            };
            let groups = self.panels().div_ceil(group);
            let tasks = m.div_ceil(TASK_ROWS) * groups;
            candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
                for task in range {
                    let (chunk, g) = (task / groups, task % groups);
                    let first_panel = g * group;
                    let panels = group.min(self.panels() - first_panel);
                    let (start, end) = (chunk * TASK_ROWS, m.min((chunk + 1) * TASK_ROWS));
                    if wide {
                        let tile = Tile {
                            first_panel,
                            panels,
                            first_row: start,
                            rows: end - start,
                        };
                        WIDE.with_borrow_mut(|wide| {
                            self.wide_tile(kernel, input, &tile, wide, &out)
                        });
                        continue;
                    }
                    let mut first_row = start;
                    while first_row < end {
                        // The VNNI kernel takes the task's rows in whole tiles at once.
                        let rows = match kernel {
                            Kernel::Vnni if end - first_row >= TILE_ROWS => {
                                (end - first_row) / TILE_ROWS * TILE_ROWS
                            }
                            _ => TILE_ROWS.min(end - first_row),
                        };
                        let tile = Tile {
                            first_panel,
                            panels,
                            first_row,
                            rows,
                        };
                        self.tile(kernel, input, &tile, &out);
                        first_row += rows;
                    }
                }
            });
        });
        Ok(())
    }

    /// [`Self::product`], but with both operands rounded to bf16 and summed on AMX
    /// tiles (see [`amx`]) where this CPU has them and the input has at least
    /// [`amx::MIN_ROWS`] rows; otherwise [`Self::product`] itself.
    pub(super) fn product_bf16(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<(), String> {
        let (n, k, nb) = (self.rows, self.cols, self.per_row());
        if m < amx::MIN_ROWS || !amx::available() {
            return self.product(x, m, out);
        }
        self.check_sizes(x, m, out)?;
        ROUNDED.with_borrow_mut(|rounded| {
            amx::round_rows(x, m, k, rounded);
            let rounded = &*rounded;
            let out = Output::new(out);
            let panels = self.panels();
            let pairs = panels.div_ceil(TILE_PANELS);
            candle_core::utils::barrier_pool().execute_chunked(pairs, |range| {
                WIDENED.with_borrow_mut(|widened| {
                    widened.resize(TILE_PANELS * nb * amx::BLOCK_VALUES, 0);
                    for pair in range {
                        let first = pair * TILE_PANELS;
                        let count = TILE_PANELS.min(panels - first);
                        let parts = widened.chunks_exact_mut(nb * amx::BLOCK_VALUES);
                        for (p, part) in parts.take(count).enumerate() {
                            let at = (first + p) * nb;
                            let offsets = match self.kind {
                                Kind::Q4_0 => amx::Offsets::Scaled(Q4_0_OFFSET),
                                Kind::Q4_1 => amx::Offsets::Given(&self.offsets[at * LANES..]),
                            };
                            amx::widen_panel(
                                &self.packed[at * BLOCK_BYTES..],
                                &self.scales[at * LANES..],
                                offsets,
                                nb,
                                part,
                            );
                        }
                        let (one, two) = widened.split_at(nb * amx::BLOCK_VALUES);
                        let both = [one, two];
                        let cols = (n - first * LANES).min(count * LANES);
                        let target = out.columns(n, first * LANES, cols);
                        // SAFETY: the pool gives each pair of panels, and with it these
                        // columns of every output row, to one worker.
                        unsafe { amx::product(rounded, m, k, &both[..count], &target) };
                    }
                });
            });
        });
        Ok(())
    }

    /// [`check_sizes`] for these weights.
    fn check_sizes(&self, x: &[f32], m: usize, out: &[f32]) -> Result<(), String> {
        check_sizes(x, m, self.cols, out, self.rows)
    }

    /// Panics unless `tile` lies inside the weights, the input `x` and `out`, as the
    /// kernels' loads and stores need.
    fn check(&self, x: &Input, tile: &Tile, out: &Output<'_>) {
        let (n, k, nb) = (self.rows, self.cols, self.per_row());
        let (panels, rows) = (tile.first_panel + tile.panels, tile.first_row + tile.rows);
        assert!(
            panels * nb * BLOCK_BYTES <= self.packed.len()
                && panels * nb * LANES <= self.scales.len()
                && (self.kind == Kind::Q4_0 || self.offsets.len() == self.scales.len())
                && rows * k <= x.values.len()
                && rows * nb <= x.scales.len()
                && rows * nb <= x.sums.len()
                && rows * nb <= x.totals.len()
                && tile.first_panel * LANES < n
                && rows * n <= out.len,
            "inconsistent operands"
        );
    }

    /// One tile of the product, on `kernel` (which this CPU must run).
    fn tile(&self, kernel: Kernel, x: &Input, tile: &Tile, out: &Output<'_>) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => {
                assert!(super::int8::vnni(), "this CPU lacks AVX-512 VNNI");
                // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked above); the kernel
                // checks the operands' sizes before any load or store.
                unsafe {
                    match (tile.rows.min(TILE_ROWS), tile.panels) {
                        (4, 2) => avx512::tile::<4, 2, false>(self, x, tile, &[], out),
                        (3, 2) => avx512::tile::<3, 2, false>(self, x, tile, &[], out),
                        (2, 2) => avx512::tile::<2, 2, false>(self, x, tile, &[], out),
                        (1, 2) => avx512::tile::<1, 2, false>(self, x, tile, &[], out),
                        (4, 1) => avx512::tile::<4, 1, false>(self, x, tile, &[], out),
                        (3, 1) => avx512::tile::<3, 1, false>(self, x, tile, &[], out),
                        (2, 1) => avx512::tile::<2, 1, false>(self, x, tile, &[], out),
                        (1, 1) => avx512::tile::<1, 1, false>(self, x, tile, &[], out),
                        _ => unreachable!("tiles are at most {TILE_PANELS} panels"),
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(avx2(), "this CPU lacks AVX2, FMA or F16C");
                // SAFETY: the CPU has AVX2, FMA and F16C (checked above); the kernel
                // checks the operands' sizes before any load or store.
                unsafe {
                    match tile.rows {
                        4 => avx2::tile::<4, false>(self, x, tile, &[], out),
                        3 => avx2::tile::<3, false>(self, x, tile, &[], out),
                        2 => avx2::tile::<2, false>(self, x, tile, &[], out),
                        1 => avx2::tile::<1, false>(self, x, tile, &[], out),
                        _ => unreachable!("tiles have at most {TILE_ROWS} rows"),
                    }
                }
            }
            _ => portable_tile(self, x, tile, out),
        }
    }

    /// The tile's panels widened to a byte a weight, into `wide`: each run of 64 bytes
    /// becomes its low nibbles, then its high ones, the operands of `vpdpbusd` (or
    /// `vpmaddubsw`) the kernel would otherwise split from it.
    ///
    /// # Panics
    /// When the CPU does not run `kernel`, or `kernel` is the portable loop.
    fn widen(&self, kernel: Kernel, tile: &Tile, wide: &mut Vec<u8>) {
        let at = tile.first_panel * self.per_row() * BLOCK_BYTES;
        let packed = &self.packed[at..at + tile.panels * self.per_row() * BLOCK_BYTES];
        wide.resize(2 * packed.len(), 0);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => {
                assert!(super::int8::vnni(), "this CPU lacks AVX-512 BW");
                // SAFETY: the CPU has AVX-512 F and BW (checked above); `wide` holds
                // twice `packed`'s whole runs.
                unsafe { avx512::widen(packed, wide) };
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(avx2(), "this CPU lacks AVX2");
                // SAFETY: the CPU has AVX2 (checked above); `wide` holds twice
                // `packed`'s whole runs.
                unsafe { avx2::widen(packed, wide) };
            }
            _ => unreachable!("the portable loop reads the nibbles as they are"),
        }
    }

    /// The tile on `kernel` (VNNI or AVX2, which this CPU must run), its panels widened
    /// into `wide` first ([`Self::widen`]) and its rows taken [`WIDE_ROWS`] at a time.
    fn wide_tile(
        &self,
        kernel: Kernel,
        x: &Input,
        tile: &Tile,
        wide: &mut Vec<u8>,
        out: &Output<'_>,
    ) {
        self.widen(kernel, tile, wide);
        let (end, mut first_row) = (tile.first_row + tile.rows, tile.first_row);
        while first_row < end {
            let rows = match end - first_row {
                r if r >= WIDE_ROWS => r / WIDE_ROWS * WIDE_ROWS,
                r => r,
            };
            let part = Tile {
                first_row,
                rows,
                ..*tile
            };
            let (x, t, w) = (x, &part, &wide[..]);
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx2 {
                // SAFETY: the CPU has AVX2, FMA and F16C (as `widen` checked); the
                // kernel checks the operands' sizes, `wide`'s too, before any load or
                // store.
                unsafe {
                    match rows.min(WIDE_ROWS) {
                        4 => avx2::tile::<4, true>(self, x, t, w, out),
                        3 => avx2::tile::<3, true>(self, x, t, w, out),
                        2 => avx2::tile::<2, true>(self, x, t, w, out),
                        1 => avx2::tile::<1, true>(self, x, t, w, out),
                        _ => unreachable!("tiles have at most {WIDE_ROWS} rows"),
                    }
                }
                first_row += rows;
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (as `widen` checked); the kernel
            // checks the operands' sizes, `wide`'s too, before any load or store.
            unsafe {
                match (rows.min(WIDE_ROWS), tile.panels) {
                    (4, 3) => avx512::tile::<4, 3, true>(self, x, t, w, out),
                    (3, 3) => avx512::tile::<3, 3, true>(self, x, t, w, out),
                    (2, 3) => avx512::tile::<2, 3, true>(self, x, t, w, out),
                    (1, 3) => avx512::tile::<1, 3, true>(self, x, t, w, out),
                    (4, 2) => avx512::tile::<4, 2, true>(self, x, t, w, out),
                    (3, 2) => avx512::tile::<3, 2, true>(self, x, t, w, out),
                    (2, 2) => avx512::tile::<2, 2, true>(self, x, t, w, out),
                    (1, 2) => avx512::tile::<1, 2, true>(self, x, t, w, out),
                    (4, 1) => avx512::tile::<4, 1, true>(self, x, t, w, out),
                    (3, 1) => avx512::tile::<3, 1, true>(self, x, t, w, out),
                    (2, 1) => avx512::tile::<2, 1, true>(self, x, t, w, out),
                    (1, 1) => avx512::tile::<1, 1, true>(self, x, t, w, out),
                    _ => unreachable!("tiles are at most {WIDE_PANELS} panels"),
                }
            }
            first_row += rows;
        }
    }
}

thread_local! {
    /// The input of a product, rounded, on the thread that calls it.
    static INPUT: std::cell::RefCell<Input> = std::cell::RefCell::default();
    /// The input of a bf16 product, rounded, on the thread that calls it.
    static ROUNDED: std::cell::RefCell<Vec<u16>> = std::cell::RefCell::default();
    /// A pair of panels widened to bf16, on each worker of the pool.
    static WIDENED: std::cell::RefCell<Vec<u16>> = std::cell::RefCell::default();
    /// A task's panels (up to [`WIDE_PANELS`]) widened to a byte a weight, on each
    /// worker of the pool: 74 KB at most for SmolLM2's widest rows.
    static WIDE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::default();
}

/// Input rows `first_row..first_row + rows` times panels
/// `first_panel..first_panel + panels`.
#[derive(Clone, Copy)]
struct Tile {
    first_panel: usize,
    panels: usize,
    first_row: usize,
    rows: usize,
}

/// The `m × n` output, shared by the pool's workers, each writing its own tiles.
struct Output<'a> {
    ptr: *mut f32,
    len: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}
// SAFETY: `Output` borrows its slice mutably for its whole life, and the workers
// write disjoint tiles (see `Panels::product`) through `write` and masked stores, or
// disjoint columns (see `Panels::product_bf16`) through the AMX kernel's `Target`.
unsafe impl Sync for Output<'_> {}

impl<'a> Output<'a> {
    fn new(out: &'a mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _out: std::marker::PhantomData,
        }
    }

    /// Columns `first..first + cols` of the output's rows of `n`, for the AMX kernel.
    fn columns(&self, n: usize, first: usize, cols: usize) -> amx::Target {
        amx::Target {
            out: self.ptr,
            len: self.len,
            n,
            first,
            cols,
        }
    }

    /// # Safety
    /// `i` is below `len`, and no other thread touches element `i` meanwhile.
    unsafe fn write(&self, i: usize, v: f32) {
        debug_assert!(i < self.len);
        // SAFETY: as the caller promises.
        unsafe { *self.ptr.add(i) = v };
    }
}

/// The same sums as the VNNI kernel, one weight at a time, in the same order of float
/// operations, so that both give the same bits.
fn portable_tile(w: &Panels, x: &Input, tile: &Tile, out: &Output<'_>) {
    let (n, nb) = (w.rows, w.per_row());
    let first = tile.first_panel * LANES;
    let last = n.min((tile.first_panel + tile.panels) * LANES);
    w.check(x, tile, out);
    for r in tile.first_row..tile.first_row + tile.rows {
        for row in first..last {
            let mut total = 0.0f32;
            for j in 0..nb {
                let block = r * nb + j;
                let mut dot = match w.kind {
                    Kind::Q4_0 => Q4_0_OFFSET as i32 * x.totals[block],
                    Kind::Q4_1 => 0,
                };
                for (t, &v) in x.values[block * BLOCK..(block + 1) * BLOCK]
                    .iter()
                    .enumerate()
                {
                    let (byte, shift) = w.nibble(row, j, t);
                    dot += i32::from((w.packed[byte] >> shift) & 0xF) * i32::from(v);
                }
                let s = w.scale_index(row, j);
                let scaled = dot as f32 * x.scales[block];
                total = scaled.mul_add(w.scales[s].to_f32(), total);
                if w.kind == Kind::Q4_1 {
                    total = w.offsets[s].to_f32().mul_add(x.sums[block], total);
                }
            }
            // SAFETY: `r < first_row + rows` and `row < n`, inside the output (checked
            // above); the pool gives each tile to one worker.
            unsafe { out.write(r * n + row, total) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK, BLOCK_BYTES, Input, Kind, LANES, Output, Panels, Q4_0_OFFSET, RUN};
    use super::{RUN_BYTES, Tile};

    /// Each run of 64 bytes of `packed` as its low nibbles, then its high ones, into
    /// twice as many bytes of `wide`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn widen(packed: &[u8], wide: &mut [u8]) {
        let low = _mm512_set1_epi8(0xF);
        let runs = packed.chunks_exact(RUN_BYTES);
        for (run, out) in runs.zip(wide.chunks_exact_mut(2 * RUN_BYTES)) {
            // SAFETY: `run` is 64 bytes and `out` 128.
            unsafe {
                let v = _mm512_loadu_si512(run.as_ptr().cast());
                let (lo, hi) = (out.as_mut_ptr(), out.as_mut_ptr().add(RUN_BYTES));
                _mm512_storeu_si512(lo.cast(), _mm512_and_si512(v, low));
                let high = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                _mm512_storeu_si512(hi.cast(), high);
            }
        }
    }

    /// The tile's input rows, `R` at a time, times its `P` panels, written to `out`.
    /// One call covers a task's rows, so that the checks and what depends only on the
    /// panels are done once for all of them. With `W`, the weights come from `wide`:
    /// the tile's panels as [`widen`] leaves them.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const R: usize, const P: usize, const W: bool>(
        w: &Panels,
        x: &Input,
        tile: &Tile,
        wide: &[u8],
        out: &Output<'_>,
    ) {
        // SAFETY: as the caller promises.
        unsafe {
            match w.kind {
                Kind::Q4_0 => kernel::<R, P, W, false>(w, x, tile, wide, out),
                Kind::Q4_1 => kernel::<R, P, W, true>(w, x, tile, wide, out),
            }
        }
    }

    /// [`tile`] for one kind of weights: Q4_1's where `Q4_1` is true, else Q4_0's,
    /// so that neither kind's loop carries the other's steps.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const R: usize, const P: usize, const W: bool, const Q4_1: bool>(
        w: &Panels,
        x: &Input,
        tile: &Tile,
        wide: &[u8],
        out: &Output<'_>,
    ) {
        let (n, k, nb) = (w.rows, w.cols, w.per_row());
        assert_eq!(w.kind == Kind::Q4_1, Q4_1, "weights of the other kind");
        assert!(
            tile.rows.is_multiple_of(R) && tile.panels == P,
            "rows in groups of {R} × {P} panels"
        );
        w.check(x, tile, out);
        assert!(
            !W || wide.len() == 2 * P * nb * BLOCK_BYTES,
            "widened panels of another size"
        );
        let low = _mm512_set1_epi8(0xF);
        let first_block = tile.first_panel * nb;
        let xs = x.values.as_ptr();
        for first_row in (tile.first_row..tile.first_row + tile.rows).step_by(R) {
            let mut totals = [[_mm512_setzero_ps(); P]; R];
            // Each row's blocks: their sums, scales and scaled sums, `nb` of each.
            let blocks: [_; R] = std::array::from_fn(|r| {
                let at = (first_row + r) * nb..(first_row + r + 1) * nb;
                let (t, e, s) = (&x.totals[at.clone()], &x.scales[at.clone()], &x.sums[at]);
                (t, e, s)
            });
            for j in 0..nb {
                let mut dots = [[_mm512_setzero_si512(); P]; R];
                if !Q4_1 {
                    for (dots, (t, _, _)) in dots.iter_mut().zip(&blocks) {
                        *dots = [_mm512_set1_epi32(Q4_0_OFFSET as i32 * t[j]); P];
                    }
                }
                for run in 0..BLOCK / RUN {
                    let mut lo = [_mm512_setzero_si512(); P];
                    let mut hi = [_mm512_setzero_si512(); P];
                    for p in 0..P {
                        if W {
                            // SAFETY: both halves of run `run` of block `j` of the
                            // tile's panel `p` lie inside `wide`, checked above.
                            unsafe {
                                let at = (p * nb + j) * BLOCK_BYTES + run * RUN_BYTES;
                                let at = wide.as_ptr().add(2 * at);
                                lo[p] = _mm512_loadu_si512(at.cast());
                                hi[p] = _mm512_loadu_si512(at.add(RUN_BYTES).cast());
                            }
                            continue;
                        }
                        // SAFETY: block `j` of panel `first_panel + p` lies inside
                        // `packed`, checked above.
                        let v = unsafe {
                            let at = (first_block + p * nb + j) * BLOCK_BYTES + run * RUN_BYTES;
                            _mm512_loadu_si512(w.packed.as_ptr().add(at).cast())
                        };
                        lo[p] = _mm512_and_si512(v, low);
                        hi[p] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    }
                    for (r, dots) in dots.iter_mut().enumerate() {
                        // SAFETY: the eight input bytes of this run of row
                        // `first_row + r` lie inside `values`, checked above.
                        let (a, b) = unsafe {
                            let at = xs.add((first_row + r) * k + j * BLOCK + run * RUN);
                            (
                                at.cast::<i32>().read_unaligned(),
                                at.add(RUN / 2).cast::<i32>().read_unaligned(),
                            )
                        };
                        let (a, b) = (_mm512_set1_epi32(a), _mm512_set1_epi32(b));
                        for p in 0..P {
                            dots[p] = _mm512_dpbusd_epi32(dots[p], lo[p], a);
                            dots[p] = _mm512_dpbusd_epi32(dots[p], hi[p], b);
                        }
                    }
                }
                let mut d = [_mm512_setzero_ps(); P];
                let mut o = [_mm512_setzero_ps(); P];
                for p in 0..P {
                    let at = (first_block + p * nb + j) * LANES;
                    // SAFETY: the panel's 16 scales (and offsets) of block `j` lie inside
                    // `scales` (and `offsets`), checked above.
                    unsafe {
                        d[p] =
                            _mm512_cvtph_ps(_mm256_loadu_si256(w.scales.as_ptr().add(at).cast()));
                        if Q4_1 {
                            o[p] = _mm512_cvtph_ps(_mm256_loadu_si256(
                                w.offsets.as_ptr().add(at).cast(),
                            ));
                        }
                    }
                }
                for ((totals, dots), (_, e, s)) in totals.iter_mut().zip(&dots).zip(&blocks) {
                    let (e, sum) = (_mm512_set1_ps(e[j]), _mm512_set1_ps(s[j]));
                    for p in 0..P {
                        let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dots[p]), e);
                        totals[p] = _mm512_fmadd_ps(scaled, d[p], totals[p]);
                        if Q4_1 {
                            totals[p] = _mm512_fmadd_ps(o[p], sum, totals[p]);
                        }
                    }
                }
            }
            for (r, totals) in totals.iter().enumerate() {
                for (p, v) in totals.iter().enumerate() {
                    let col = (tile.first_panel + p) * LANES;
                    if col >= n {
                        break;
                    }
                    let mask: __mmask16 = if n - col >= LANES {
                        u16::MAX
                    } else {
                        (1u16 << (n - col)) - 1
                    };
                    // SAFETY: only lanes below `n` of row `first_row + r` are stored, inside
                    // the output (checked above); the pool gives each tile to one worker.
                    unsafe {
                        let at = out.ptr.add((first_row + r) * n + col);
                        _mm512_mask_storeu_ps(at, mask, *v);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{BLOCK, BLOCK_BYTES, Input, Kind, LANES, Output, Panels, Q4_0_OFFSET, RUN};
    use super::{RUN_BYTES, Tile};

    /// Weight rows of one 256-bit vector of 32-bit sums: half a panel, whose bytes are
    /// the first or second 32 of each run.
    const HALF: usize = LANES / 2;

    /// Each run of 64 bytes of `packed` as its low nibbles, then its high ones, into
    /// twice as many bytes of `wide`: the layout of the VNNI kernel's widened panels.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen(packed: &[u8], wide: &mut [u8]) {
        let low = _mm256_set1_epi8(0xF);
        let runs = packed.chunks_exact(RUN_BYTES);
        for (run, out) in runs.zip(wide.chunks_exact_mut(2 * RUN_BYTES)) {
            for h in 0..2 {
                // SAFETY: `run` is 64 bytes and `out` 128; half `h` of the run goes to
                // bytes `32h..32h + 32` of the low nibbles and of the high ones.
                unsafe {
                    let v = _mm256_loadu_si256(run.as_ptr().add(h * RUN_BYTES / 2).cast());
                    let lo = out.as_mut_ptr().add(h * RUN_BYTES / 2);
                    _mm256_storeu_si256(lo.cast(), _mm256_and_si256(v, low));
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                    _mm256_storeu_si256(lo.add(RUN_BYTES).cast(), high);
                }
            }
        }
    }

    /// The tile's input rows, `R` at a time, times its panels, written to `out`, half a
    /// panel at a time. `vpmaddubsw` sums two products of a 4-bit weight and an input
    /// byte into 16 bits (at most 2·15·127 in magnitude), and a block's eight such
    /// vectors are added in 16 bits before `vpmaddwd` widens them: 8·3,810 cannot
    /// overflow. With `W`, the weights come from `wide`: the tile's panels as
    /// [`widen`] leaves them.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile<const R: usize, const W: bool>(
        w: &Panels,
        x: &Input,
        tile: &Tile,
        wide: &[u8],
        out: &Output<'_>,
    ) {
        let (n, k, nb) = (w.rows, w.cols, w.per_row());
        let q4_1 = w.kind == Kind::Q4_1;
        assert!(tile.rows.is_multiple_of(R), "rows in groups of {R}");
        w.check(x, tile, out);
        assert!(
            !W || wide.len() == 2 * tile.panels * nb * BLOCK_BYTES,
            "widened panels of another size"
        );
        let low = _mm256_set1_epi8(0xF);
        let ones = _mm256_set1_epi16(1);
        let xs = x.values.as_ptr();
        for first_row in (tile.first_row..tile.first_row + tile.rows).step_by(R) {
            for part in 0..2 * tile.panels {
                let panel = tile.first_panel + part / 2;
                let col = panel * LANES + (part % 2) * HALF;
                if col >= n {
                    break;
                }
                let mut totals = [_mm256_setzero_ps(); R];
                for j in 0..nb {
                    let block = panel * nb + j;
                    let mut pairs = [_mm256_setzero_si256(); R];
                    for run in 0..BLOCK / RUN {
                        let half = (part % 2) * RUN_BYTES / 2;
                        let (lo, hi) = if W {
                            // SAFETY: both halves of run `run` of block `j` of the
                            // tile's panel `part / 2` lie inside `wide`, checked above.
                            unsafe {
                                let at = ((part / 2) * nb + j) * BLOCK_BYTES + run * RUN_BYTES;
                                let at = wide.as_ptr().add(2 * at + half);
                                (
                                    _mm256_loadu_si256(at.cast()),
                                    _mm256_loadu_si256(at.add(RUN_BYTES).cast()),
                                )
                            }
                        } else {
                            // SAFETY: block `j` of the panel lies inside `packed`,
                            // checked above.
                            let v = unsafe {
                                let at = block * BLOCK_BYTES + run * RUN_BYTES + half;
                                _mm256_loadu_si256(w.packed.as_ptr().add(at).cast())
                            };
                            (
                                _mm256_and_si256(v, low),
                                _mm256_and_si256(_mm256_srli_epi16::<4>(v), low),
                            )
                        };
                        for (r, pairs) in pairs.iter_mut().enumerate() {
                            // SAFETY: the eight input bytes of this run of row
                            // `first_row + r` lie inside `values`, checked above.
                            let (a, b) = unsafe {
                                let at = xs.add((first_row + r) * k + j * BLOCK + run * RUN);
                                (
                                    at.cast::<i32>().read_unaligned(),
                                    at.add(RUN / 2).cast::<i32>().read_unaligned(),
                                )
                            };
                            let a = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(a));
                            let b = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(b));
                            *pairs = _mm256_add_epi16(*pairs, _mm256_add_epi16(a, b));
                        }
                    }
                    let at = block * LANES + (part % 2) * HALF;
                    // SAFETY: the half panel's 8 scales (and offsets) of block `j` lie
                    // inside `scales` (and `offsets`), checked above.
                    let (d, o) = unsafe {
                        let load =
                            |v: &[f16]| _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(at).cast()));
                        (
                            load(&w.scales),
                            if q4_1 {
                                load(&w.offsets)
                            } else {
                                _mm256_setzero_ps()
                            },
                        )
                    };
                    for (r, (totals, pairs)) in totals.iter_mut().zip(&pairs).enumerate() {
                        let i = (first_row + r) * nb + j;
                        let mut dot = _mm256_madd_epi16(*pairs, ones);
                        if !q4_1 {
                            let offset = _mm256_set1_epi32(Q4_0_OFFSET as i32 * x.totals[i]);
                            dot = _mm256_add_epi32(dot, offset);
                        }
                        let scaled =
                            _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(x.scales[i]));
                        *totals = _mm256_fmadd_ps(scaled, d, *totals);
                        if q4_1 {
                            *totals = _mm256_fmadd_ps(o, _mm256_set1_ps(x.sums[i]), *totals);
                        }
                    }
                }
                let lanes = HALF.min(n - col);
                for (r, totals) in totals.iter().enumerate() {
                    let mut row = [0.0f32; HALF];
                    // SAFETY: `row` holds 8 floats.
                    unsafe { _mm256_storeu_ps(row.as_mut_ptr(), *totals) };
                    for (c, &v) in row[..lanes].iter().enumerate() {
                        // SAFETY: `col + c < n`, in row `first_row + r` of the output
                        // (checked above); the pool gives each tile to one worker.
                        unsafe { out.write((first_row + r) * n + col + c, v) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::super::nibbles::tests::{check_product, ggml};
    use super::*;

    const KINDS: [(GgmlDType, Kind); 2] =
        [(GgmlDType::Q4_0, Kind::Q4_0), (GgmlDType::Q4_1, Kind::Q4_1)];

    /// The panels hold exactly ggml's values, and the product (VNNI where the CPU has
    /// it, else the portable loop) matches the f32 product of those values within the
    /// input's 8-bit rounding: both types, a partial last panel and pair of panels,
    /// partial row tiles, and more rows than one task.
    #[test]
    fn product_matches_the_dequantized_weights() {
        for (dtype, kind) in KINDS {
            let (n, k) = (37, 32 * 7);
            let (weights, q) = ggml(dtype, n, k, 3);
            let panels = Panels::from_ggml(kind, n, k, &q.data().unwrap()).unwrap();
            let mut back = vec![0.0; n * k];
            panels.dequantize(0..n * k / BLOCK, &mut back);
            assert_eq!(back, weights, "{kind:?} values");
            let mut window = vec![0.0; 3 * BLOCK];
            panels.dequantize(20..23, &mut window);
            assert_eq!(window, weights[20 * BLOCK..23 * BLOCK], "{kind:?} window");

            let ms = [1, 3, 6, TASK_ROWS + 7];
            check_product(&format!("{kind:?}"), &weights, (n, k), &ms, |x, m, out| {
                panels.product(x, m, out)
            });
        }
    }

    /// On AMX, the bf16 product gives the sums of the bf16-rounded input and weights
    /// (within f32's summation), for both types, three panels (a pair and one, the last
    /// partial) and four (two pairs), and row counts on and off the tiles' 32.
    #[test]
    fn the_bf16_product_sums_the_rounded_operands() {
        if !amx::available() {
            eprintln!("skipped: this CPU or process cannot use AMX tiles");
            return;
        }
        let bf16 = |v: f32| f64::from(half::bf16::from_f32(v).to_f32());
        for ((dtype, kind), n) in KINDS.into_iter().flat_map(|t| [(t, 40), (t, 64)]) {
            let k = 32 * 5;
            let (weights, q) = ggml(dtype, n, k, 3);
            let panels = Panels::from_ggml(kind, n, k, &q.data().unwrap()).unwrap();
            for m in [amx::MIN_ROWS, amx::MIN_ROWS + 13] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                    .collect();
                let mut out = vec![f32::NAN; m * n];
                panels.product_bf16(&x, m, &mut out).unwrap();
                for (i, &got) in out.iter().enumerate() {
                    let (r, c) = (i / n, i % n);
                    let want: f64 = (0..k)
                        .map(|j| bf16(x[r * k + j]) * bf16(weights[c * k + j]))
                        .sum();
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{kind:?} {n} {m} [{r}, {c}]: {got} vs {want}"
                    );
                }
                // Rounding the operands moves the product little from the 8-bit one.
                let mut eight = vec![f32::NAN; m * n];
                panels.product(&x, m, &mut eight).unwrap();
                let top = eight.iter().fold(0f32, |t, v| t.max(v.abs()));
                let off = out
                    .iter()
                    .zip(&eight)
                    .fold(0f32, |t, (a, b)| t.max((a - b).abs()));
                assert!(off <= 0.02 * top, "{kind:?} {n} {m}: {off} of {top}");
            }
        }
    }

    /// Each SIMD kernel this CPU runs (VNNI, its widened panels too, AVX2) gives the
    /// very bits of the portable loop, for every tile shape.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_simd_kernels_agree_with_the_portable_loop() {
        let kernels: Vec<Kernel> = [
            (Kernel::Vnni, super::super::int8::vnni()),
            (Kernel::Avx2, avx2()),
        ]
        .into_iter()
        .filter_map(|(kernel, runs)| runs.then_some(kernel))
        .collect();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512 VNNI nor AVX2");
            return;
        }
        // Three panels, the last one partial, in a pair and one, or in three (widened
        // only); two, the second one partial, in a pair.
        let shapes: [(usize, &[(usize, usize)]); 2] =
            [(40, &[(0, 2), (2, 1), (0, 3)]), (20, &[(0, 2)])];
        for ((dtype, kind), (n, pairs)) in KINDS.into_iter().flat_map(|t| shapes.map(|s| (t, s))) {
            let (k, m) = (32 * 5, 13);
            let (_, q) = ggml(dtype, n, k, 5);
            let panels = Panels::from_ggml(kind, n, k, &q.data().unwrap()).unwrap();
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 13) % 29) as f32 - 14.0).collect();
            let mut input = Input::default();
            input.quantize(&x, m, k);
            for (kernel, &(first_panel, panels_in_tile)) in kernels
                .iter()
                .flat_map(|&kernel| pairs.iter().map(move |p| (kernel, p)))
            {
                // Widened panels, and the VNNI kernel's, also take several groups of
                // four rows in one call.
                let many = [(0, 12), (1, 12), (5, 8), (1, 11), (0, 13)];
                let tiles = [(0, 4), (4, 3), (1, 2), (6, 1)];
                for &(first_row, rows) in tiles.iter().chain(&many) {
                    let tile = Tile {
                        first_panel,
                        panels: panels_in_tile,
                        first_row,
                        rows,
                    };
                    let (mut fast, mut slow) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                    portable_tile(&panels, &input, &tile, &Output::new(&mut slow));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    let label = format!("{kernel:?} {kind:?} {first_panel} {first_row} {rows}");
                    // Where the panels are not widened, the VNNI kernel takes more than
                    // one tile's rows in whole tiles, AVX2 one tile; both at most a pair
                    // of panels.
                    let direct = match kernel {
                        Kernel::Vnni => rows <= TILE_ROWS || rows % TILE_ROWS == 0,
                        _ => rows <= TILE_ROWS,
                    };
                    if panels_in_tile <= TILE_PANELS && direct {
                        panels.tile(kernel, &input, &tile, &Output::new(&mut fast));
                        assert_eq!(bits(&fast), bits(&slow), "{label}");
                    }
                    // Widened panels, in tiles of 4 rows and what is left: 13 rows are
                    // three tiles and one row, 11 two tiles and 3 rows.
                    let mut wide = Vec::new();
                    fast.fill(f32::NAN);
                    let target = Output::new(&mut fast);
                    panels.wide_tile(kernel, &input, &tile, &mut wide, &target);
                    assert_eq!(bits(&fast), bits(&slow), "widened: {label}");
                }
            }
        }
    }

    /// Blocks at the edge of the AVX2 kernel's 16-bit sums — every weight 15, every
    /// input byte ±127 — come out whole, for both types and several row counts.
    #[test]
    fn the_largest_block_sums_do_not_overflow() {
        let (n, k) = (24, 2 * BLOCK);
        for (dtype, kind) in KINDS {
            // All but the first weight of a block round to 15: for Q4_1 the first is
            // the minimum and the rest the maximum; Q4_0's scale is the first's `1/-8`,
            // so `-7/8` is `d·(15 - 8)`.
            let (first, rest) = match kind {
                Kind::Q4_0 => (1.0, -0.875),
                Kind::Q4_1 => (0.0, 1.0),
            };
            let weights: Vec<f32> = (0..n * k)
                .map(|i| if i % BLOCK == 0 { first } else { rest })
                .collect();
            let t =
                candle_core::Tensor::from_vec(weights.clone(), (n, k), &candle_core::Device::Cpu)
                    .unwrap();
            let q = candle_core::quantized::QTensor::quantize(&t, dtype).unwrap();
            let panels = Panels::from_ggml(kind, n, k, &q.data().unwrap()).unwrap();
            let fifteens = (0..n * k)
                .filter(|&i| {
                    let (byte, shift) = panels.nibble(i / k, i % k / BLOCK, i % BLOCK);
                    (panels.packed[byte] >> shift) & 0xF == 15
                })
                .count();
            assert_eq!(fifteens, n * k / BLOCK * (BLOCK - 1), "{kind:?}");
            let mut back = vec![0.0; n * k];
            panels.dequantize(0..n * k / BLOCK, &mut back);
            for sign in [1.0f32, -1.0] {
                for m in [1, 5] {
                    let x = vec![sign; m * k];
                    let mut out = vec![f32::NAN; m * n];
                    panels.product(&x, m, &mut out).unwrap();
                    for (i, &got) in out.iter().enumerate() {
                        let c = i % n;
                        let want: f32 = back[c * k..(c + 1) * k].iter().sum::<f32>() * sign;
                        assert!(
                            (got - want).abs() <= 0.01 * want.abs(),
                            "{kind:?} {sign} {m} [{i}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(Panels::from_ggml(Kind::Q4_0, 2, 32, &[0; 18 * 3]).is_err());
        assert!(Panels::from_ggml(Kind::Q4_1, 1, 48, &[0; 20]).is_err());
        assert!(Panels::from_ggml(Kind::Q4_1, 1, 64, &[0; 20 * 3]).is_err());
        assert!(Panels::from_ggml(Kind::Q4_1, 1, 64, &[0; 20 * 2]).is_ok());
    }

    #[test]
    fn both_products_refuse_inputs_and_outputs_of_the_wrong_size() {
        // 3 weight rows of 64: 2 blocks of Q4_0 each.
        let w = Panels::from_ggml(Kind::Q4_0, 3, 64, &[0; 18 * 6]).unwrap();
        // 64 input rows, so the bf16 product would take its AMX path where it can.
        let m = 64;
        let (x, mut out) = (vec![0.0; m * 64], vec![0.0; m * 3]);
        let short = vec![0.0; m * 64 - 1];
        let mut long_out = vec![0.0; m * 3 + 1];
        for product in [Panels::product, Panels::product_bf16] {
            assert!(product(&w, &x, m, &mut out).is_ok());
            let refused = product(&w, &short, m, &mut out).unwrap_err();
            assert!(refused.contains("4095 inputs"), "{refused}");
            let refused = product(&w, &x, m, &mut long_out).unwrap_err();
            assert!(refused.contains("193 outputs"), "{refused}");
        }
    }
}
