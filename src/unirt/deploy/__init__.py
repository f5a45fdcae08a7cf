"""Deployment files for cluster engines that run `unirt serve`: KServe manifests (`unirt.deploy.kserve`) and the
container image they run (`unirt.deploy.image`, built from deploy/kserve/Dockerfile). `unirt deploy kserve ...`
writes them. Nothing here is imported by `import unirt`; writing YAML needs `pip install '.[deploy]'` (from unirt's
source checkout)."""
