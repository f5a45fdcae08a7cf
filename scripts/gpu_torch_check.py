"""The torch plugin's GPU figures, one prepared run (scripts/gpu_check.sh calls it; `--device cpu --quick` is a dry
run of the same code on a CPU). Prints, per model (a real-size CNN: torchvision resnet50; a small transformer:
transformers' BERT at 4 layers, random weights, no downloads; hand-written stand-ins where those are missing):

- fp32 / fp16 / bf16 answers against float64 eager, and median run times (device tensors in, device outputs);
- unirt's overhead: Session.run vs calling the ExportedProgram's module directly (and an AOTInductor package with
  --aoti), batch 1 and 32, ratio of medians (target <= 1.02);
- DLPack in/out: the engine sees the caller's data pointer; a profile of a run shows no device-to-host copy;
- run_many (host arrays, 32 requests of batch 1) vs 32 runs one by one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import unirt


def cnn(quick: bool) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    try:
        import torchvision

        if not quick:
            return torchvision.models.resnet50(weights=None).eval(), (3, 224, 224), "resnet50 (torchvision)"
    except ImportError:
        pass
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )
    return net.eval(), (3, 64, 64), "small CNN (stand-in)"


class _Bert(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state


def transformer(quick: bool) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    try:
        from transformers import BertConfig, BertModel

        if not quick:
            config = BertConfig(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048)
            return _Bert(BertModel(config).eval()), (128,), "BERT 4x512 (transformers, random weights)"
    except ImportError:
        pass
    layer = torch.nn.TransformerEncoderLayer(64, 4, 256, batch_first=True, dropout=0.0)
    return (
        torch.nn.Sequential(torch.nn.Embedding(1000, 64), torch.nn.TransformerEncoder(layer, 2)).eval(),
        (32,),
        "small transformer (stand-in)",
    )


def example(shape: tuple[int, ...], batch: int, device: str, tokens: bool) -> torch.Tensor:
    if tokens:
        return torch.randint(0, 1000, (batch, *shape), device=device)
    return torch.randn(batch, *shape, device=device)


def timed(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def export(module: torch.nn.Module, x: torch.Tensor, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small models and few runs (a dry run)")
    parser.add_argument("--aoti", action="store_true", help="also compile an AOTInductor package of each model")
    args = parser.parse_args()
    device, runs = args.device, 5 if args.quick else 50
    on_gpu = device.startswith("cuda")
    work = Path(tempfile.mkdtemp(prefix="unirt_torch_gpu_"))
    print(f"torch {torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name()})" if on_gpu else ""))
    for build in (cnn, transformer):
        module, shape, label = build(args.quick)
        tokens = build is transformer
        x2 = example(shape, 2, "cpu", tokens)
        path = export(module, x2, work / f"{build.__name__}.pt2")
        print(f"\n== {label}: {path.stat().st_size / 1e6:.1f} MB")
        module = module.to(device)
        x = example(shape, 8, device, tokens)
        with torch.no_grad():
            exact = module.double()(x if tokens else x.double()).double() if not tokens else None
            module.float()
        # answers and timings per precision
        for precision in ("fp32", "fp16", "bf16"):
            try:
                sess = unirt.Session(path, backend="torch", device=device, precision=precision, device_outputs=on_gpu)
            except unirt.UnsupportedOptionError as exc:
                print(f"{precision}: refused: {exc}")
                continue
            with sess:
                name = sess.outputs[0].name
                y = sess.run({sess.inputs[0].name: x})[name]
                y = y.double() if on_gpu else torch.from_numpy(y).double()
                if exact is None:  # token model: fp32 eager is the reference
                    with torch.no_grad():
                        ref = module(x).double().to(y.device)
                else:
                    ref = exact.to(y.device)
                rel = float((y - ref).norm() / ref.norm())
                ms = timed(lambda s=sess, n=sess.inputs[0].name, x=x: s.run({n: x}), runs)
                print(
                    f"{precision}: rel-L2 vs {'fp64' if exact is not None else 'fp32 eager'} {rel:.2e}, "
                    f"median {ms:.3f} ms at batch 8 ({sess.precision_info})"
                )
        # overhead vs the program's own module (and AOTInductor)
        ep_module = torch.export.load(str(path)).module().to(device)
        aoti = None
        if args.aoti:
            aoti_path = work / f"{build.__name__}_aoti.pt2"
            ep = torch.export.load(str(path))
            if on_gpu:
                from torch.export.passes import move_to_device_pass

                ep = move_to_device_pass(ep, device)
            torch._inductor.aoti_compile_and_package(ep, package_path=str(aoti_path))
            aoti = (torch._inductor.aoti_load_package(str(aoti_path)), aoti_path)
        with unirt.Session(path, backend="torch", device=device, device_outputs=on_gpu) as sess:
            name = sess.inputs[0].name
            for batch in (1, 32):
                xb = example(shape, batch, device, tokens)
                feed = xb if on_gpu else xb.numpy()
                with torch.inference_mode():
                    direct = timed(lambda m=ep_module, xb=xb: m(xb), runs)
                ours = timed(lambda s=sess, n=name, f=feed: s.run({n: f}), runs)
                line = (
                    f"batch {batch}: ExportedProgram.module() {direct:.3f} ms, unirt {ours:.3f} ms, "
                    f"ratio {ours / direct:.3f}"
                )
                if aoti is not None:
                    with unirt.Session(
                        aoti[1],
                        backend="torch",
                        device=device,
                        device_outputs=on_gpu,
                        backend_options={} if not tokens else {"input_dtypes": {"input_0": "int64"}},
                    ) as asess:
                        with torch.inference_mode():
                            a_direct = timed(lambda m=aoti[0], xb=xb: m(xb), runs)
                        a_ours = timed(lambda s=asess, f=feed: s.run({"input_0": f}), runs)
                    line += f"; AOTI direct {a_direct:.3f} ms, unirt {a_ours:.3f} ms, ratio {a_ours / a_direct:.3f}"
                print(line)
            # DLPack in/out: pointer identity and no device-to-host copy in a profile
            if on_gpu:
                seen: list[int] = []
                hook = torch.nn.modules.module.register_module_forward_pre_hook(
                    lambda m, a, seen=seen: seen.extend(t.data_ptr() for t in a if isinstance(t, torch.Tensor))
                )
                xb = example(shape, 4, device, tokens)
                try:
                    out = sess.run({name: xb})
                finally:
                    hook.remove()
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    sess.run({name: xb})
                copies = [e.name for e in prof.events() if "Memcpy DtoH" in e.name or "Memcpy D2H" in e.name]
                print(
                    f"DLPack in: engine saw the caller's pointer: {xb.data_ptr() in seen}; out on "
                    f"{next(iter(out.values())).device}; device-to-host copies in a profiled run: {len(copies)}"
                )
            # run_many vs one by one (host arrays)
        with unirt.Session(path, backend="torch", device=device) as sess:
            name = sess.inputs[0].name
            requests = [{name: example(shape, 1, "cpu", tokens).numpy()} for _ in range(32)]
            one = timed(lambda s=sess, rs=requests: [s.run(r) for r in rs], max(3, runs // 10))
            many = timed(lambda s=sess, rs=requests: s.run_many(rs), max(3, runs // 10))
            print(
                f"32 requests of batch 1: one by one {one:.2f} ms, run_many {many:.2f} ms "
                f"({one / many:.2f}x), stats {sess.batch_stats()}"
            )


if __name__ == "__main__":
    main()
