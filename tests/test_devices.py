import pytest

from unirt import Device, UnsupportedOptionError
from unirt.hardware import _intel_gpus


@pytest.mark.parametrize(
    "spec,kind,index",
    [
        ("cpu", "cpu", None),
        ("CUDA:1", "cuda", 1),
        ("gpu", "gpu", None),
        ("npu", "npu", None),
        ("auto", "auto", None),
        (None, "auto", None),
    ],
)
def test_parse(spec, kind, index):
    d = Device.parse(spec)
    assert (d.kind, d.index) == (kind, index)


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:3", "", 3])
def test_parse_errors(spec):
    with pytest.raises(UnsupportedOptionError):
        Device.parse(spec)


def test_matching():
    offers = ("cuda:0", "cuda:1", "npu", "cpu")
    assert Device.parse("auto").pick(offers) == "cuda:0"
    assert Device.parse("cuda:1").pick(offers) == "cuda:1"
    assert Device.parse("gpu").pick(offers) == "cuda:0"
    assert Device.parse("npu").pick(offers) == "npu"
    assert Device.parse("cpu").pick(offers) == "cpu"
    assert Device.parse("cuda:2").pick(offers) is None
    assert Device.parse("cuda").pick(("cpu",)) is None
    assert str(Device.parse("cuda:1")) == "cuda:1"


def test_auto_never_picks_an_npu():
    """NPUs run reduced precision: auto takes the next device, and an NPU-only offer gives auto nothing."""
    assert Device.parse("auto").pick(("npu", "cpu")) == "cpu"
    assert Device.parse("auto").pick(("npu",)) is None
    assert Device.parse("npu").pick(("npu", "cpu")) == "npu"


def test_intel_gpus_are_read_from_sysfs(tmp_path):
    """DRM cards with PCI vendor 0x8086, in card order; connectors, render nodes and other vendors are not GPUs."""

    def card(name, vendor, device):
        (tmp_path / name / "device").mkdir(parents=True)
        (tmp_path / name / "device" / "vendor").write_text(vendor + "\n")
        (tmp_path / name / "device" / "device").write_text(device + "\n")

    card("card10", "0x8086", "0x56a0")
    card("card2", "0x8086", "0xa7a0")
    card("card1", "0x10de", "0x2330")
    card("card2-DP-1", "0x8086", "0x0000")
    card("renderD128", "0x8086", "0x0000")
    assert _intel_gpus(tmp_path) == ("0xa7a0", "0x56a0")
    assert _intel_gpus(tmp_path / "missing") == ()
