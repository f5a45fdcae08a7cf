"""PyTorch formats told apart by the zip archive's member names (the layouts torch 2.13 writes; the torch plugin's
tests check files torch itself made), and pickles refused saying how to export. No torch needed."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest

import unirt
from unirt import ModelFormat


def archive(*names: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, b"pt2" if name.endswith("archive_format") else b"{}")
    return buf.getvalue()


LAYOUTS = {
    ModelFormat.TORCH_EXPORT: archive(
        "m/data/weights/weight_0", "m/models/model.json", "m/archive_format", "m/byteorder"
    ),
    ModelFormat.TORCH_AOTI: archive(
        "a/data/aotinductor/model/c.wrapper.so",
        "a/data/aotinductor/model/c.wrapper.cpp",
        "a/archive_format",
        "a/archive_version",
    ),
    ModelFormat.TORCHSCRIPT: archive(
        "m/data/0", "m/data.pkl", "m/code/__torch__/linear.py", "m/constants.pkl", "m/version"
    ),
}


@pytest.mark.parametrize("fmt", list(LAYOUTS), ids=lambda f: f.value)
def test_torch_archives_are_detected_by_their_members(fmt, tmp_path):
    assert unirt.detect_format(LAYOUTS[fmt])[0] is fmt
    path = tmp_path / "model.bin"  # the suffix plays no part
    path.write_bytes(LAYOUTS[fmt])
    assert unirt.open_model(path).format is fmt


def test_older_exported_program_archives_are_detected():
    assert (
        unirt.detect_format(archive("m/serialized_exported_program.json", "m/version"))[0] is ModelFormat.TORCH_EXPORT
    )


@pytest.mark.parametrize(
    "data",
    [
        archive("sd/data.pkl", "sd/data/0", "sd/version"),
        pickle.dumps({"fc.weight": [1.0]}, protocol=2),
        pickle.dumps({"fc.weight": [1.0]}, protocol=5),
    ],
    ids=["torch.save zip", "pickle protocol 2", "pickle protocol 5"],
)
def test_pickles_are_refused_saying_how_to_export(data):
    with pytest.raises(unirt.ModelFormatError) as err:
        unirt.detect_format(data)
    assert "pickle" in str(err.value) and "torch.export.save(torch.export.export(model" in str(err.value)


def test_a_pt2_archive_without_a_program_is_damaged_and_other_zips_are_unknown(tmp_path):
    with pytest.raises(unirt.ModelLoadError, match="neither an exported program"):
        unirt.detect_format(archive("m/archive_format", "m/byteorder"))
    with pytest.raises(unirt.ModelFormatError, match="unrecognised model format"):
        unirt.detect_format(archive("readme.txt"))
    truncated = tmp_path / "model.pt2"
    truncated.write_bytes(LAYOUTS[ModelFormat.TORCH_EXPORT][:40])
    with pytest.raises(unirt.ModelLoadError, match="the suffix says torch-export"):
        unirt.open_model(truncated)
