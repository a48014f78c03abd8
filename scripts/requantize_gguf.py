#!/usr/bin/env python3
"""Writes a copy of a GGUF whose matrices are stored as another ggml type (Q4_0 by
default), the metadata unchanged, so that ragbox and llama.cpp can be compared on the
same weight type: `ragbox bench generate --model OUT --weights original` beside
`scripts/bench_llama_cpp.py OUT`. Every matrix whose rows hold whole blocks is
dequantized and quantized again (as ragbox's `weights = "q4_0"` does at load); vectors
(norms) stay as they are. Benchmark tooling only; needs the `gguf` and `numpy` packages.

    python scripts/requantize_gguf.py models/SmolLM2-135M-Instruct/….gguf /tmp/q4_0.gguf [--type Q4_0]
"""
import argparse

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize


def copy_metadata(reader: GGUFReader, writer: GGUFWriter) -> None:
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--type", default="Q4_0")
    a = ap.parse_args()
    target = GGMLQuantizationType[a.type]
    block = GGML_QUANT_SIZES[target][0]
    reader = GGUFReader(a.source)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(a.target, arch)
    copy_metadata(reader, writer)
    converted = 0
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]  # rows first
        if len(shape) == 2 and shape[1] % block == 0 and t.tensor_type != target:
            values = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
            writer.add_tensor(t.name, quantize(values, target), raw_dtype=target)
            converted += 1
        else:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{converted} matrices stored as {a.type} in {a.target}")


if __name__ == "__main__":
    main()
