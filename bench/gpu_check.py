"""GPU check: our Keras 3 MLP under JAX on the GPU and on the host CPU, samples/s, step time, memory-bandwidth use.

For a machine with JAX and Keras but no TensorFlow (nor pandas, scikit-learn,
MLflow): `KERAS_BACKEND=jax python bench/gpu_check.py` from the repository root.
Here: `KERAS_BACKEND=jax uv run --with "jax[cpu]" python bench/gpu_check.py`.
It builds the model with `ml_tasks.training.keras_mlp.build_mlp` (the code training runs;
importing it loads only Keras) on numpy data shaped like the prepared
`generate_wide` split (58 float32 features), then on each device:

- the train step alone: a jitted Keras stateless step (`stateless_call`,
  `jax.value_and_grad`, `optimizer.stateless_apply`), STEPS_PER_CALL steps in
  one `lax.fori_loop` on a batch already on the device, so the time is the
  device's, not Python's. Batch 512 is what training uses; larger batches show
  where the device stops being launch-bound (65536 on the GPU only).
- `model.fit` on numpy arrays (the real path, host-to-device copies included).

Bandwidth bound: an MLP step at these sizes does few FLOPs per byte, so the
device's memory bandwidth is its ceiling. Bytes a step has to move at least:
parameters read in the forward and backward passes, gradients written, Adam
reading parameter, gradient and two moments and writing three (10 x P x 4
bytes); every layer's activations written forward and read back for the
weight gradient, the activation's derivative and the input gradient written
and read once (5 x batch x sum of layer widths x activation bytes, inputs
included). Divided by the step time, over the device's peak bandwidth (a
small table by `device_kind`; `RATCHET_PEAK_BANDWIDTH_GBPS` overrides, e.g.
4800 for an H200). On the GPU the model runs under the precision training
picks there (`configure_accelerators`: mixed bfloat16); on the CPU in float32,
as a CPU-only training machine runs it. Finishes in well under 5 minutes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N_FEATURES = 58
FIT_ROWS = 262_144
TRAINING_BATCH = 512
GPU_BATCHES = (512, 8192, 65536)
CPU_BATCHES = (512, 8192)  # a 65536-row step takes a CPU seconds (dropout's random bits alone are 16M per step)
STEPS_PER_CALL = 20
MEASURE_S = 1.0  # per configuration, after a compile-and-warm call
# Peak HBM/DRAM bandwidth in GB/s by jax `device_kind` (vendor figures).
PEAK_BANDWIDTH_GBPS = {
    "H200": 4800, "H100 SXM": 3350, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "GH200": 4000,
    "B200": 8000, "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100-SXM4-40GB": 1555, "A100-PCIE-40GB": 1555,
    "L40S": 864, "L40": 864, "L4": 300, "A10G": 600, "A10": 600, "T4": 320, "V100": 900, "RTX 4090": 1008,
}
FORBIDDEN_MODULES = ("tensorflow", "pandas", "sklearn", "mlflow", "pyarrow", "torch")


def peak_bandwidth_gbps(device_kind: str) -> float | None:
    """The device's peak memory bandwidth: the env override, else the longest table name found in its kind."""
    if os.environ.get("RATCHET_PEAK_BANDWIDTH_GBPS"):
        return float(os.environ["RATCHET_PEAK_BANDWIDTH_GBPS"])
    matches = [name for name in PEAK_BANDWIDTH_GBPS if name.lower() in device_kind.lower()]
    return float(PEAK_BANDWIDTH_GBPS[max(matches, key=len)]) if matches else None


def bytes_per_step(model: Any, batch: int, activation_bytes: int) -> int:
    """The least a train step moves (see the module docstring): 10 x params x 4 + 5 x batch x widths x bytes."""
    params = model.count_params()
    widths = N_FEATURES + sum(int(layer.output.shape[-1]) for layer in model.layers[1:])
    return 10 * params * 4 + 5 * batch * widths * activation_bytes


def make_data(rows: int, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, N_FEATURES), dtype=np.float32)
    w = rng.standard_normal(N_FEATURES).astype(np.float32) / np.sqrt(N_FEATURES)
    y = (rng.random(rows) < 1 / (1 + np.exp(-2 * (x @ w)))).astype(np.float32)
    return x, y


def step_time(model: Any, device: Any, batch: int) -> float:
    """Seconds per train step on `device`, data resident there, STEPS_PER_CALL steps per dispatch."""
    import jax
    import keras

    x, y = make_data(batch, seed=1)
    loss_fn = keras.losses.BinaryCrossentropy()
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    def loss_and_updates(trainable: Any, non_trainable: Any, xb: Any, yb: Any) -> Any:
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        return loss_fn(yb[:, None], y_pred), non_trainable

    grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

    def one_step(_: int, state: Any) -> Any:
        trainable, non_trainable, opt_vars, xb, yb, _loss = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, xb, yb)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return trainable, non_trainable, opt_vars, xb, yb, loss

    @jax.jit
    def many_steps(state: Any) -> Any:
        return jax.lax.fori_loop(0, STEPS_PER_CALL, one_step, state)

    put = lambda values: [jax.device_put(v, device) for v in values]
    state = (put([v.value for v in model.trainable_variables]), put([v.value for v in model.non_trainable_variables]),
             put([v.value for v in optimizer.variables]), jax.device_put(x, device), jax.device_put(y, device),
             jax.device_put(jax.numpy.float32(0), device))
    state = jax.block_until_ready(many_steps(state))  # compile and warm
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < MEASURE_S or calls < 2:
        state = many_steps(state)
        calls += 1
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / (calls * STEPS_PER_CALL)


def fit_samples_per_s(model: Any, device: Any) -> float:
    """`model.fit` on numpy arrays, batch 512, one epoch after a warm one."""
    import jax

    x, y = make_data(FIT_ROWS)
    with jax.default_device(device):
        model.fit(x[:TRAINING_BATCH * 8], y[:TRAINING_BATCH * 8], batch_size=TRAINING_BATCH, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=TRAINING_BATCH, epochs=1, verbose=0)
    return FIT_ROWS / (time.perf_counter() - start)


def check_device(label: str, device: Any, precision: str) -> dict[str, float]:
    import jax
    import keras

    from ml_tasks.training.keras_mlp import DEFAULT_MLP_PARAMS, build_mlp

    keras.mixed_precision.set_global_policy(precision)
    with jax.default_device(device):
        model = build_mlp(N_FEATURES, {**DEFAULT_MLP_PARAMS, "batch_size": TRAINING_BATCH}, seed=0)
    activation_bytes = 2 if "bfloat16" in precision else 4
    peak = peak_bandwidth_gbps(device.device_kind)
    print(f"-- {label}: {device.device_kind} ({device.platform}), precision {precision}, {model.count_params():,} parameters; "
          f"peak bandwidth {f'{peak:g} GB/s' if peak else 'unknown (set RATCHET_PEAK_BANDWIDTH_GBPS)'}", flush=True)
    figures: dict[str, float] = {}
    for batch in GPU_BATCHES if device.platform == "gpu" else CPU_BATCHES:
        seconds = step_time(model, device, batch)
        figures[f"step_{batch}"] = batch / seconds
        moved = bytes_per_step(model, batch, activation_bytes)
        achieved = moved / seconds / 1e9
        fraction = f"{achieved / peak:.2%} of peak" if peak else "peak unknown"
        note = " (training's batch)" if batch == TRAINING_BATCH else ""
        print(f"GPUCHECK {label} batch={batch}{note} step={seconds * 1e6:.1f}us samples/s={batch / seconds:,.0f} "
              f"bytes/step={moved / 1e6:.2f}MB achieved={achieved:.1f}GB/s {fraction}", flush=True)
    figures["fit"] = fit_samples_per_s(model, device)
    print(f"GPUCHECK {label} model.fit batch={TRAINING_BATCH} samples/s={figures['fit']:,.0f} "
          f"(numpy arrays, host-to-device copies included)", flush=True)
    return figures


def main() -> int:
    started = time.perf_counter()
    import ml_tasks.training.keras_mlp  # noqa: F401  (before Keras: what our own code imports)

    ours = [name for name in FORBIDDEN_MODULES if name in sys.modules]
    import jax
    import keras

    if keras.backend.backend() != "jax":
        print(f"KERAS_BACKEND is {keras.backend.backend()!r}: run with KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    from ml_tasks.training.keras_mlp import configure_accelerators

    accelerators = configure_accelerators()  # what training would pick on this machine
    print(f"-- jax {jax.__version__}, keras {keras.__version__}, devices {[str(d) for d in jax.devices()]}", flush=True)
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    gpu = check_device("gpu", gpus[0], accelerators["precision"]) if gpus else None
    if gpu is None:
        print("GPUCHECK no GPU found: CPU figures only", flush=True)
    cpu = check_device("cpu", jax.devices("cpu")[0], "float32")
    if gpu is not None:
        step = f"step_{TRAINING_BATCH}"
        print(f"GPUCHECK gpu/cpu samples/s at batch {TRAINING_BATCH}: train step {gpu[step] / cpu[step]:.1f}x, "
              f"model.fit {gpu['fit'] / cpu['fit']:.1f}x", flush=True)
    # Keras imports some of these itself when they are installed (sklearn wrappers; `set_random_seed` seeds
    # TensorFlow too): absent on a JAX-only machine, they are skipped. Only our own imports are an error.
    by_keras = [name for name in FORBIDDEN_MODULES if name in sys.modules and name not in ours]
    print(f"GPUCHECK heavy modules imported by ml_tasks: {', '.join(ours) or 'none'}; by Keras because installed here: "
          f"{', '.join(by_keras) or 'none'}; took {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
