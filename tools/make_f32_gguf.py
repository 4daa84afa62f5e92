#!/usr/bin/env python3
"""Convert a (quantized) GGUF model into an all-F32 GGUF with identical metadata.

Every KV pair (tokenizer arrays, chat template, hyper-parameters) is copied
unchanged except general.file_type, which becomes 0 (ALL_F32). Every tensor is
dequantized to float32 with gguf.quants.dequantize and written with the same
name, shape and order as in the input.

Usage: tools/make_f32_gguf.py IN.gguf OUT.gguf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf.quants import dequantize

FILE_TYPE_ALL_F32 = 0


def fail(message: str) -> None:
    """Print an error and exit with status 1."""
    print(f"make_f32_gguf: error: {message}", file=sys.stderr)
    sys.exit(1)


def open_gguf(path: Path) -> gguf.GGUFReader:
    """Open a GGUF file, turning any problem into an error naming the file."""
    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises several types for bad files
        fail(f"{path}: not a readable GGUF file: {exc}")
    raise AssertionError("unreachable")


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Copy every KV pair in file order; general.file_type becomes ALL_F32."""
    for field in reader.fields.values():
        # GGUF.* are virtual fields; the writer emits general.architecture itself.
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = FILE_TYPE_ALL_F32
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)


def dequantized(tensor: gguf.ReaderTensor) -> np.ndarray:
    """Return the tensor as float32 with numpy shape = reversed GGUF dims."""
    data = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    if data.size != int(np.prod(shape)):
        fail(f"tensor {tensor.name}: dequantized {data.size} values, expected shape {shape}")
    return data.reshape(shape)


def convert(src: Path, dst: Path) -> None:
    """Write dst as the F32 version of src."""
    reader = open_gguf(src)
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        fail(f"{src}: missing key {gguf.Keys.General.ARCHITECTURE}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(dst, arch=arch_field.contents(), endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    copy_metadata(reader, writer)

    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        n_bytes = int(np.prod(shape)) * 4
        writer.add_tensor_info(tensor.name, shape, np.dtype(np.float32), n_bytes,
                               gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(dequantized(tensor))
    writer.close()
    print(f"make_f32_gguf: wrote {dst} ({len(reader.tensors)} tensors, "
          f"{dst.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="input GGUF (e.g. the Q4_1 model)")
    parser.add_argument("output", type=Path, help="output F32 GGUF (keep it out of the repo)")
    args = parser.parse_args()
    if args.input.resolve() == args.output.resolve():
        fail(f"{args.output}: output would overwrite the input")
    convert(args.input, args.output)


if __name__ == "__main__":
    main()
