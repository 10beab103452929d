"""GPU and memory-pool metrics on the runner's server, checked after every
other test has driven the GPU paths (conftest orders this module last)."""

import shutil
import subprocess

from conftest import metric_families, scrape

GPU_FAMILIES = ("nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes")
POOL_FAMILIES = ("nereid_pinned_pool_bytes", "nereid_cuda_pool_bytes", "nereid_memory_pool_fallbacks_total")


def nvidia_smi_uuids():
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    return {line.strip() for line in out.stdout.splitlines() if line.strip()} or None


def test_gpu_metrics(metrics_url):
    samples = scrape(metrics_url)
    families = metric_families(metrics_url)
    for family in GPU_FAMILIES:
        assert family in families, f"no # TYPE line for {family}"
    total = [(labels, v) for name, labels, v in samples if name == "nv_gpu_memory_total_bytes"]
    assert total, "no nv_gpu_memory_total_bytes sample"
    for labels, value in total:
        assert labels.get("gpu_uuid"), f"nv_gpu_memory_total_bytes without gpu_uuid: {labels}"
        assert value > 0, f"nv_gpu_memory_total_bytes{labels} = {value}"
    used = {labels.get("gpu_uuid"): v for name, labels, v in samples if name == "nv_gpu_memory_used_bytes"}
    for labels, value in total:
        assert 0 < used[labels["gpu_uuid"]] <= value
    utilization = [v for name, _, v in samples if name == "nv_gpu_utilization"]
    assert utilization and all(0.0 <= v <= 1.0 for v in utilization), utilization
    uuids = nvidia_smi_uuids()
    if uuids is not None:
        assert {labels["gpu_uuid"] for labels, _ in total} <= uuids, uuids


def test_pool_metrics(metrics_url):
    samples = scrape(metrics_url)
    families = metric_families(metrics_url)
    for family in POOL_FAMILIES:
        assert family in families, f"no # TYPE line for {family}"
    pinned_states = {labels.get("state") for name, labels, _ in samples if name == "nereid_pinned_pool_bytes"}
    assert pinned_states, "no nereid_pinned_pool_bytes sample"
    cuda = [labels for name, labels, _ in samples if name == "nereid_cuda_pool_bytes"]
    assert cuda and all("gpu" in labels and "state" in labels for labels in cuda), cuda
    for name, labels, value in samples:
        if name in ("nereid_pinned_pool_bytes", "nereid_cuda_pool_bytes"):
            assert value >= 0, (name, labels, value)
