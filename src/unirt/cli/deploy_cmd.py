"""`unirt deploy kserve MODEL_OR_REPO --name N`: write the KServe manifests that run `unirt serve` on a model."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of CPUs, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of CPUs, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="write deployment files for a cluster engine (KServe)",
        description="Write the files a cluster engine needs to run unirt serve.",
    )
    engines = p.add_subparsers(dest="engine", metavar="ENGINE", required=True)
    k = engines.add_parser(
        "kserve",
        help="a KServe ServingRuntime and InferenceService for unirt serve",
        description="Write a KServe ServingRuntime running unirt serve and an InferenceService "
        "for MODEL_OR_REPO, and lay a single model file out as a model repository.",
    )
    k.add_argument("model", metavar="MODEL_OR_REPO", help="a model file, or a Triton model repository directory")
    k.add_argument(
        "--name",
        required=True,
        help="the InferenceService's name (a DNS-1035 label); also the v2 model name of a single model file",
    )
    k.add_argument(
        "--extras",
        default="",
        metavar="LIST",
        help="comma-separated backends (onnxruntime, openvino, "
        "tflite, ncnn, mnn, tensorrt) and unirt extras (convert, tools) to install in the image; the "
        "backends the models' formats need are added",
    )
    k.add_argument(
        "--image",
        help="the container image (default unirt-serve:VERSION-BACKENDS; build it with the printed docker command)",
    )
    k.add_argument("--runtime-name", default="unirt", help="the ServingRuntime's name (default unirt)")
    k.add_argument(
        "--storage-uri",
        help="where KServe downloads the model repository from (s3://, gs://, pvc://, "
        "...; default pvc://unirt-models/NAME)",
    )
    k.add_argument(
        "--cpus", type=_cpus, default=1.0, help="CPUs per replica: resources and unirt serve --threads (default 1)"
    )
    k.add_argument("--memory", default="2Gi", help="memory per replica (default 2Gi)")
    k.add_argument(
        "--gpus", type=int, default=None, help="NVIDIA GPUs per replica (default 1 for TensorRT plans, else 0)"
    )
    k.add_argument("--namespace", help="Kubernetes namespace of both objects (default: kubectl's)")
    k.add_argument("-o", "--output", metavar="DIR", help="where to write (default ./kserve-NAME)")
    k.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.kserve import plan

    deployment = plan(
        args.model,
        args.name,
        extras=[e for e in args.extras.split(",") if e.strip()],
        image=args.image,
        runtime_name=args.runtime_name,
        storage_uri=args.storage_uri,
        cpus=args.cpus,
        memory=args.memory,
        gpus=args.gpus,
        namespace=args.namespace,
    )
    out = Path(args.output or f"kserve-{args.name}")
    for path in deployment.write(out):
        print(f"wrote {path}{'/' if path.is_dir() else ''}")
    repo = out / "model-repository" if deployment.repository_files else Path(args.model)
    print(
        f"\nimage: {deployment.image} (backends: {', '.join(deployment.contents.backends)}; extras: "
        f"{', '.join(deployment.contents.extras)})"
    )
    print("next steps:")
    print(f"  1. from unirt's source tree: {deployment.contents.build_command(deployment.image)}")
    print(f"     and push {deployment.image} where the cluster pulls images from")
    print(f"  2. upload {repo}/ to {deployment.storage_uri}")
    print(f"  3. kubectl apply -f {out / 'servingruntime.yaml'} -f {out / 'inferenceservice.yaml'}")
    return 0
