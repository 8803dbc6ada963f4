"""The .exgs container: layout per docs/format.md, round trips, and a reader that rejects every damaged file.

The helpers `split_file` / `join_file` below are an independent implementation of the byte layout in
docs/format.md §2; they check the writer against the spec and build damaged files whose checksums are
recomputed ("resealed"), so the checks behind the checksums are exercised too.
"""

from __future__ import annotations

import json
import lzma
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exgs_core.errors import SceneFormatError
from exgs_core.io import read_scene
from exgs_core.io.exgs import (
    DECODE_ALLOWANCE,
    GENERIC_EXPANSION,
    MAGIC,
    decode_container,
    decode_exgs,
    encode_container,
    encode_exgs,
    inria_ratio,
    read_exgs,
    scene_section_sizes,
    write_exgs,
)
from exgs_core.scene import GaussianScene
from exgs_core.ugc.pack import PackSettings
from tests.conftest import SCENES_DIR, requires_data

# --- an independent reader/writer of the byte layout (docs/format.md §2) --------------------------------------


def split_file(data: bytes) -> tuple[tuple[int, int], bytes, list[list]]:
    """((major, minor), header JSON bytes, [[name, codec tag, stored bytes, decoded length], ...])."""
    assert data[:8] == MAGIC
    major, minor, count, header_length = struct.unpack_from("<HHII", data, 8)
    header = data[20 : 20 + header_length]
    (crc,) = struct.unpack_from("<I", data, 20 + header_length)
    assert crc == zlib.crc32(data[8 : 20 + header_length])
    offset = 24 + header_length
    records = []
    for _ in range(count):
        name_length = data[offset]
        name = data[offset + 1 : offset + 1 + name_length].decode("ascii")
        tag, stored_length, decoded_length, crc = struct.unpack_from("<4sQQI", data, offset + 1 + name_length)
        start = offset + 1 + name_length + 24
        stored = data[start : start + stored_length]
        assert crc == zlib.crc32(data[offset : start - 4] + stored)
        records.append([name, tag, stored, decoded_length])
        offset = start + stored_length
    assert offset == len(data)
    return (major, minor), header, records


def join_file(version: tuple[int, int], header: bytes, records: list[list], count: int | None = None) -> bytes:
    """The file bytes for these parts, with every checksum recomputed."""
    count = len(records) if count is None else count
    fixed = struct.pack("<HHII", version[0], version[1], count, len(header)) + header
    parts = [MAGIC, fixed, struct.pack("<I", zlib.crc32(fixed))]
    for name, tag, stored, decoded_length in records:
        record = bytes([len(name)]) + name.encode("ascii") + struct.pack("<4sQQ", tag, len(stored), decoded_length)
        parts += [record, struct.pack("<I", zlib.crc32(record + stored)), stored]
    return b"".join(parts)


def reseal_header(data: bytes, change) -> bytes:
    version, header, records = split_file(data)
    parsed = json.loads(header)
    change(parsed)
    return join_file(version, json.dumps(parsed).encode(), records)


# --- fixtures: small files from real scenes -------------------------------------------------------------------


def _subset(path: Path, count: int, seed: int) -> GaussianScene:
    from exgs_core.io import read_scene

    scene = read_scene(path)
    rng = np.random.default_rng(seed)
    return scene.subset(np.sort(rng.choice(len(scene), size=min(count, len(scene)), replace=False)))


@pytest.fixture(scope="module")
def small_scenes() -> dict[str, GaussianScene]:
    if not SCENES_DIR.is_dir():
        pytest.skip(f"real data folder {SCENES_DIR} is absent")
    return {
        "sh3": _subset(SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply", 300, 0),  # SH 3, log-scales < -20
        "sh2": _subset(SCENES_DIR / "pcengine_playbot_3_0.inria.ply", 300, 1),
        "fox": _subset(SCENES_DIR / "mjw_fox.ply", 300, 2),
    }


@pytest.fixture(scope="module")
def small_files(small_scenes, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("exgs")
    files = {}
    for key, scene in small_scenes.items():
        for codec in ("zstd", "lzma"):
            path = folder / f"{key}_{codec}.exgs"
            write_exgs(scene, path, codec=codec, extra_header={"compression": {"keep_ratio": 0.1}})
            files[f"{key}_{codec}"] = path.read_bytes()
    return files


def _read_bytes(data: bytes, tmp_path: Path, name: str = "damaged.exgs") -> GaussianScene:
    path = tmp_path / name
    path.write_bytes(data)
    return read_exgs(path)


# --- the container on its own --------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["raw", "zstd", "lzma", "auto"])
def test_container_round_trip(codec):
    header = {"count": 3, "nested": {"list": [1, 2.5, None, "ü"]}}
    sections = {"a": b"", "b_2": bytes(range(256)) * 40, "zeros": bytes(10000)}
    data = encode_container(header, sections, codec=codec)
    decoded_header, decoded = decode_container(data)
    assert decoded_header == header
    assert decoded == sections
    assert list(decoded) == list(sections)


@requires_data
def test_sections_coded_side_by_side_give_the_bytes_coded_one_after_another(monkeypatch):
    """encode_container codes large files' sections on threads; the file must not depend on it."""
    import exgs_core.io.exgs as exgs_module
    from exgs_core.ugc.pack import pack_scene

    scene = read_scene(SCENES_DIR / "mjw_fox.ply")
    header, sections = pack_scene(scene)
    assert sum(len(s) for s in sections.values()) >= exgs_module.PARALLEL_ENCODE_ABOVE  # the threaded path
    import exgs_core.side_by_side as threads_module

    monkeypatch.setattr(threads_module, "THREADS", 2)
    side_by_side = encode_container(header, sections)
    monkeypatch.setattr(threads_module, "THREADS", 1)
    assert side_by_side == encode_container(header, sections)
    assert decode_container(side_by_side)[1] == sections


def test_lzma_writer_dictionary_is_capped_and_every_dictionary_decodes(monkeypatch):
    """A section longer than the writer's dictionary (LZMA_WRITER_DICT) decodes with the reader's own filter, and
    so does one written with the reader's whole dictionary (files written before the cap)."""
    import exgs_core.io.exgs as exgs_module

    block = np.random.default_rng(0).integers(0, 256, 1 << 18, np.uint8).tobytes()
    payload = block + bytes(exgs_module.LZMA_WRITER_DICT + (1 << 19)) + block  # a repeat beyond the cap
    capped = encode_container({}, {"big": payload})
    assert decode_container(capped)[1]["big"] == payload
    monkeypatch.setattr(exgs_module, "LZMA_WRITER_DICT", 1 << 26)
    whole = encode_container({}, {"big": payload})
    assert decode_container(whole)[1]["big"] == payload
    assert len(capped) > len(whole) + len(block) // 2  # the capped writer could not see the repeat


def test_container_layout_matches_the_spec():
    data = encode_container({"k": "v"}, {"one": b"x" * 100, "two": b"abc"}, codec="raw")
    version, header, records = split_file(data)
    assert version == (2, 0)
    assert json.loads(header) == {"k": "v"}
    assert records == [["one", b"raw\0", b"x" * 100, 100], ["two", b"raw\0", b"abc", 3]]
    zstd_records = split_file(encode_container({}, {"s": b"y" * 1000}, codec="zstd"))[2]
    assert zstd_records[0][1] == b"zstd" and zstandard.ZstdDecompressor().decompress(zstd_records[0][2]) == b"y" * 1000
    lzma_records = split_file(encode_container({}, {"s": b"y" * 1000}, codec="lzma"))[2]
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 4096}]
    assert lzma_records[0][1] == b"lzma"
    assert lzma.decompress(lzma_records[0][2], format=lzma.FORMAT_RAW, filters=filters) == b"y" * 1000


def test_container_rejects_bad_arguments():
    with pytest.raises(ValueError, match="codec"):
        encode_container({}, {}, codec="gzip")
    with pytest.raises(ValueError, match="section name"):
        encode_container({}, {"Bad Name": b""})
    with pytest.raises(ValueError):
        encode_container({"x": float("nan")}, {})


def test_container_generic_budget_caps_declared_sizes():
    data = join_file((1, 0), b"{}", [["big", b"raw\0", b"", GENERIC_EXPANSION * 1000 + DECODE_ALLOWANCE]])
    with pytest.raises(SceneFormatError, match="implausibly many"):
        decode_container(data, "x.exgs")


# --- scenes in the container ---------------------------------------------------------------------------------


def test_write_read_round_trip_and_header(small_scenes, tmp_path):
    scene = small_scenes["sh2"]
    scene.metadata["comments"] = ["License: CC-BY-4.0"]
    path = tmp_path / "scene.exgs"
    size = write_exgs(
        scene, path, settings=PackSettings(), extra_header={"compression": {"target": "ratio", "ratio": 100}}
    )
    assert [p.name for p in tmp_path.iterdir()] == ["scene.exgs"]  # no temporary file left behind
    assert size == path.stat().st_size
    back = read_exgs(path)
    assert len(back) == len(scene) and back.sh_degree == scene.sh_degree
    stored = back.metadata["exgs"]
    assert json.loads(split_file(path.read_bytes())[1]) == stored
    assert stored["painter"] == {"model_id": None}
    assert stored["pack"] == PackSettings().to_dict()
    assert stored["compression"] == {"target": "ratio", "ratio": 100}
    assert stored["source"]["format"] == "ply" and stored["source"]["count"] == len(scene)
    assert stored["source"]["name"] == "pcengine_playbot_3_0.inria.ply"
    assert stored["created_by"].startswith("exgs ")
    assert stored["count"] == len(scene) and stored["sh_degree"] == 2
    assert back.metadata["format"] == "exgs" and back.metadata["source_bytes"] == path.stat().st_size
    assert back.metadata["comments"] == ["License: CC-BY-4.0"]
    assert np.allclose(np.sort(back.means, axis=0), np.sort(scene.means, axis=0), atol=1e-3)


def test_encode_decode_in_memory_match_the_file(small_scenes, tmp_path):
    scene = small_scenes["fox"]
    data = encode_exgs(scene, extra_header={"compression": {"keep_ratio": 0.5}})
    write_exgs(scene, tmp_path / "fox.exgs", extra_header={"compression": {"keep_ratio": 0.5}})
    assert data == (tmp_path / "fox.exgs").read_bytes()
    from_bytes, from_file = decode_exgs(data), read_exgs(tmp_path / "fox.exgs")
    assert np.array_equal(from_bytes.means, from_file.means) and np.array_equal(from_bytes.sh, from_file.sh)
    with pytest.raises(SceneFormatError, match="memory.exgs: .*magic"):
        decode_exgs(b"nope", "memory.exgs")


def test_write_exgs_sh_degree_and_codecs(small_scenes, tmp_path):
    scene = small_scenes["sh3"]
    for codec in ("raw", "zstd", "lzma", "auto"):
        write_exgs(scene, tmp_path / f"{codec}.exgs", sh_degree=1, codec=codec)
        back = read_exgs(tmp_path / f"{codec}.exgs")
        assert back.sh_degree == 1
    sizes = {codec: (tmp_path / f"{codec}.exgs").stat().st_size for codec in ("raw", "zstd", "lzma", "auto")}
    assert sizes["auto"] <= min(sizes["zstd"], sizes["lzma"]) + 16


def test_extra_header_cannot_override_pack_fields(small_scenes, tmp_path):
    with pytest.raises(ValueError, match="count"):
        write_exgs(small_scenes["fox"], tmp_path / "x.exgs", extra_header={"count": 5})
    assert not (tmp_path / "x.exgs").exists()


def test_write_exgs_failure_leaves_existing_file(small_scenes, tmp_path):
    path = tmp_path / "keep.exgs"
    path.write_bytes(b"old")
    empty = small_scenes["fox"].subset(np.zeros(len(small_scenes["fox"]), bool))
    with pytest.raises(ValueError, match="empty"):
        write_exgs(empty, path)
    assert path.read_bytes() == b"old"


# --- each kind of damage gives a clear SceneFormatError naming the file --------------------------------------


def _expect(data: bytes, tmp_path: Path, pattern: str) -> None:
    with pytest.raises(SceneFormatError, match=pattern) as caught:
        _read_bytes(data, tmp_path)
    assert str(tmp_path / "damaged.exgs") in str(caught.value)


def test_rejects_wrong_magic(small_files, tmp_path):
    data = small_files["sh2_zstd"]
    _expect(b"PLY\n" + data[4:], tmp_path, "wrong magic")
    _expect(b"", tmp_path, "wrong magic")
    _expect(data.replace(b"\r\n", b"\n", 1), tmp_path, "line endings")


def test_rejects_unknown_major_version_accepts_newer_minor(small_files, tmp_path):
    version, header, records = split_file(small_files["sh2_zstd"])
    _expect(join_file((3, 0), header, records), tmp_path, r"version 3\.0 is not supported")
    newer = join_file((2, 7), header, records + [["future_extra", b"zstd", b"\x00garbage", 123]])
    assert len(_read_bytes(newer, tmp_path)) == 300


def test_version_1_files_still_read(small_files, tmp_path):
    version, header, records = split_file(small_files["sh2_zstd"])
    assert version == (2, 0)
    old = _read_bytes(join_file((1, 0), header, records), tmp_path)
    new = _read_bytes(small_files["sh2_zstd"], tmp_path)
    assert len(old) == 300 and np.array_equal(old.means, new.means) and np.array_equal(old.sh, new.sh)
    assert "restoration" not in old.metadata


def test_rejects_bad_checksums(small_files, tmp_path):
    data = bytearray(small_files["sh2_zstd"])
    header_damaged = bytearray(data)
    header_damaged[30] ^= 0x01
    _expect(bytes(header_damaged), tmp_path, "header checksum")
    section_damaged = bytearray(data)
    section_damaged[-5] ^= 0x10
    _expect(bytes(section_damaged), tmp_path, "checksum mismatch")


def test_rejects_truncated_files(small_files, tmp_path):
    data = small_files["sh3_lzma"]
    for cut in (4, 12, 21, 200, len(data) // 2, len(data) - 1):
        _expect(data[:cut], tmp_path, "truncated|wrong magic")
    version, header, records = split_file(data)
    _expect(join_file(version, header, records[:-1], count=len(records)), tmp_path, "truncated")


def test_rejects_malformed_json(small_files, tmp_path):
    version, header, records = split_file(small_files["fox_zstd"])
    _expect(join_file(version, header[:-1], records), tmp_path, "not valid JSON")
    _expect(join_file(version, b"[1, 2]", records), tmp_path, "JSON object")
    _expect(join_file(version, b"\xff\xfe{}", records), tmp_path, "not valid JSON")
    _expect(join_file(version, b'{"count": NaN}', records), tmp_path, "not valid JSON")
    _expect(join_file(version, b"[" * 100000 + b"]" * 100000, records), tmp_path, "not valid JSON")


def test_rejects_missing_and_duplicate_sections(small_files, tmp_path):
    version, header, records = split_file(small_files["fox_zstd"])
    without = [r for r in records if r[0] != "scales"]
    _expect(join_file(version, header, without), tmp_path, "lacks the required section.*scales")
    _expect(join_file(version, header, records + [records[0]]), tmp_path, "appears twice")
    _expect(small_files["fox_zstd"] + b"\x00", tmp_path, "truncated|unexpected bytes")


def test_rejects_sizes_inconsistent_with_counts(small_files, tmp_path):
    def more(header):
        header["count"] += 1

    _expect(reseal_header(small_files["sh2_zstd"], more), tmp_path, "call for")

    def higher_degree(header):
        header["sh_degree"] = 3
        header["quantisation"]["sh_rest"]["bits"].append(4)
        header["quantisation"]["sh_rest"]["absmax"].append(1.0)

    _expect(reseal_header(small_files["sh2_zstd"], higher_degree), tmp_path, "call for")
    version, header, records = split_file(small_files["sh2_zstd"])
    records[0][3] += 6
    _expect(join_file(version, header, records), tmp_path, "call for")


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda h: h.pop("quantisation"), "quantisation"),
        (lambda h: h.update(count=-3), "count"),
        (lambda h: h.update(count=True), "count"),
        (lambda h: h.update(sh_degree=7), "sh_degree"),
        (lambda h: h.update(layout="planes-v9"), "layout"),
        (lambda h: h["quantisation"]["means"].update(bits=40), "bits"),
        (lambda h: h["quantisation"]["means"].update(min=[0, 0]), "min"),
        (lambda h: h["quantisation"]["means"].update(radius=[-1, 0, 0]), "radius"),
        (lambda h: h["quantisation"]["means"].update(min=[1e300, 0, 0], max=[1e300, 1, 1]), "positions"),
        (lambda h: h["quantisation"]["sh_dc"].update(min=["a", 1, 1]), "sh_dc"),
        (lambda h: h["quantisation"]["sh_dc"].update(step=-1.0), "step"),
        (lambda h: h["quantisation"]["sh_rest"].update(absmax=[1.0]), "absmax"),
        (lambda h: h["quantisation"]["log_scales"].update(min=[5.0, 5.0, 5.0], max=[1.0, 1.0, 1.0]), "minimum"),
    ],
)
def test_rejects_bad_header_fields(small_files, tmp_path, change, pattern):
    _expect(reseal_header(small_files["sh2_zstd"], change), tmp_path, pattern)


def test_rejects_bad_section_payloads(small_files, tmp_path):
    version, header, records = split_file(small_files["sh2_zstd"])
    index = [r[0] for r in records].index("quats")

    def with_record(name, tag, stored, decoded_length):
        changed = [list(r) for r in records]
        changed[index] = [name, tag, stored, decoded_length]
        return join_file(version, header, changed)

    name, tag, stored, length = records[index]
    _expect(with_record(name, b"gzip", stored, length), tmp_path, "unknown codec")
    _expect(with_record(name, tag, stored[:-3], length), tmp_path, "does not decompress")
    _expect(with_record(name, b"raw\0", stored, length), tmp_path, "decodes to")
    _expect(with_record(name, b"lzma", stored, length), tmp_path, "does not decompress")
    other = zstandard.ZstdCompressor().compress(bytes(length + 1))
    _expect(with_record(name, tag, other, length), tmp_path, "does not decompress")
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(length))
    _expect(with_record(name, tag, no_size, length), tmp_path, "does not decompress")
    lzma_long = lzma.compress(bytes(length + 5), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    _expect(with_record(name, b"lzma", lzma_long, length), tmp_path, "does not decompress|more than")
    _expect(with_record("Quats", tag, stored, length), tmp_path, "invalid name")


def test_scene_section_sizes_rejects_a_bare_header():
    with pytest.raises(ValueError):
        scene_section_sizes({})


# --- fuzzing: only SceneFormatError, quickly, in bounded memory ----------------------------------------------

FUZZ = settings(
    max_examples=200,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _read_fuzzed(data: bytes, folder: Path) -> None:
    """read_exgs either succeeds or raises SceneFormatError, allocating at most ~4x the file plus 4 MB."""
    path = folder / "fuzzed.exgs"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        read_exgs(path)
    except SceneFormatError as error:
        assert str(path) in str(error)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 8 * len(data) + (4 << 20), f"peak {peak} bytes for a {len(data)}-byte file"


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@requires_data
@FUZZ
@given(data=st.data())
def test_fuzz_flipped_bytes(small_files, fuzz_folder, data):
    original = bytearray(small_files[data.draw(st.sampled_from(sorted(small_files)))])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] ^= data.draw(st.integers(1, 255))
    _read_fuzzed(bytes(original), fuzz_folder)


@requires_data
@FUZZ
@given(data=st.data())
def test_fuzz_cut_and_inserted_bytes(small_files, fuzz_folder, data):
    original = small_files[data.draw(st.sampled_from(sorted(small_files)))]
    position = data.draw(st.integers(0, len(original)))
    if data.draw(st.booleans()):
        damaged = original[:position]
    else:
        damaged = original[:position] + data.draw(st.binary(min_size=1, max_size=64)) + original[position:]
    _read_fuzzed(damaged, fuzz_folder)


@requires_data
@FUZZ
@given(garbage=st.binary(max_size=4096), keep_magic=st.booleans())
def test_fuzz_garbage(fuzz_folder, garbage, keep_magic):
    _read_fuzzed((MAGIC + garbage) if keep_magic else garbage, fuzz_folder)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)


@requires_data
@FUZZ
@given(data=st.data())
def test_fuzz_resealed_headers(small_files, fuzz_folder, data):
    """Header values replaced (with a valid checksum): the semantic checks must catch what the CRC cannot."""
    original = small_files[data.draw(st.sampled_from(sorted(small_files)))]

    def change(header):
        for _ in range(data.draw(st.integers(1, 3))):
            target, key = _pick_json_slot(header, data)
            target[key] = data.draw(_JSON_VALUES)

    _read_fuzzed(reseal_header(original, change), fuzz_folder)  # infinite floats are written as Infinity


def _pick_json_slot(node, data):
    """A (container, key) somewhere inside the parsed header, chosen by hypothesis."""
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        return node, key


@requires_data
@FUZZ
@given(data=st.data())
def test_fuzz_resealed_sections(small_files, fuzz_folder, data):
    """Compressed payloads, codecs and lengths damaged behind a valid checksum reach the decompressors."""
    version, header, records = split_file(small_files[data.draw(st.sampled_from(sorted(small_files)))])
    record = records[data.draw(st.integers(0, len(records) - 1))]
    stored = bytearray(record[2])
    action = data.draw(st.sampled_from(["flip", "cut", "length", "codec", "replace"]))
    if action == "flip" and stored:
        for _ in range(data.draw(st.integers(1, 4))):
            stored[data.draw(st.integers(0, len(stored) - 1))] ^= data.draw(st.integers(1, 255))
    elif action == "cut":
        stored = stored[: data.draw(st.integers(0, len(stored)))]
    elif action == "length":
        record[3] = data.draw(st.integers(0, 2**64 - 1))
    elif action == "codec":
        record[1] = data.draw(st.sampled_from([b"raw\0", b"zstd", b"lzma"]))
    else:
        stored = bytearray(data.draw(st.binary(max_size=256)))
    record[2] = bytes(stored)
    _read_fuzzed(join_file(version, header, records), fuzz_folder)


def test_zstd_bomb_is_refused_before_decompressing(small_files, tmp_path):
    """A small frame declaring a huge content size never gets that size allocated."""
    version, header, records = split_file(small_files["fox_zstd"])
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(200_000_000))
    assert len(bomb) < 100_000
    index = [r[0] for r in records].index("opacity")
    records[index] = ["opacity", b"zstd", bomb, records[index][3]]
    data = join_file(version, header, records)
    tracemalloc.start()
    try:
        with pytest.raises(SceneFormatError, match="opacity"):
            _read_bytes(data, tmp_path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 20_000_000


def test_read_exgs_missing_file(tmp_path):
    with pytest.raises(OSError):
        read_exgs(tmp_path / "absent.exgs")


def test_file_size_close_to_sections(small_files):
    for data in small_files.values():
        _, header, records = split_file(data)
        overhead = len(data) - sum(len(r[2]) for r in records)
        assert overhead == 24 + len(header) + sum(1 + len(r[0]) + 24 for r in records)


@requires_data
def test_rewriting_a_compressed_file_keeps_its_ratio(tmp_path: Path) -> None:
    """What a compressed scene was compressed from travels with it: an export or convert to .exgs keeps the ratio."""
    from exgs_core.io import read_scene

    scene = read_scene(SCENES_DIR / "mjw_fox.ply").subset(slice(0, 2000))
    write_exgs(scene, tmp_path / "a.exgs", extra_header={"compression": {"input_count": 200_000}})
    first = read_exgs(tmp_path / "a.exgs")
    write_exgs(first, tmp_path / "b.exgs")
    again = read_exgs(tmp_path / "b.exgs")
    assert again.metadata["exgs"]["compression"] == {"input_count": 200_000}
    assert inria_ratio(again) == pytest.approx(inria_ratio(first), rel=0.02)
    write_exgs(scene, tmp_path / "plain.exgs")  # never compressed: no ratio is made up
    assert inria_ratio(read_exgs(tmp_path / "plain.exgs")) is None
