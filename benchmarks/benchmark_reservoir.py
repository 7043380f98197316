"""Reservoir speed against named baselines, with accuracy shown beside every time.

CPU: our batched ``Reservoir.run`` (one GEMM per step over the whole batch) against reservoirpy
0.4's own batched call, ``Reservoir.run`` on the (64, 1000, 1) array (one NumPy step per sequence per
time step, float64), on the *same* reservoir (its W, W_in imported): 64 Mackey-Glass sequences of
1,000 steps, N = 256. Ours at the default threads (chosen per run, ``aphrodite/reservoir/threads.py``)
in float32 (our default) and float64 (reservoirpy's), then at 1 and at every core fixed. Shown: threads
used, wall time, speed-up, largest state difference, and the test RMSE of a one-step-forecast Ridge
readout trained on each one's states.

GPU (only when CUDA is available): the Triton scan kernel against the PyTorch eager loop (one
cuBLAS GEMM per step) and cuDNN ``nn.RNN(tanh)`` (lr = 1, so the same recurrence), end to end
from a (B, T, 32) input, N in {128 (register-resident path), 256, 1024, 2048}, B in {1, 64, 256},
T = 512. Shown: microseconds
per step and the fraction of the roofline floor per step,
``max(2 B N^2 / peak_flops, (N^2 w_bytes + 2 B N 4) / peak_bandwidth)``, i.e. W read once per
step plus the drive read and state write, at the card's fp32 (non-tensor-core) FLOP rate.

Usage::

    python benchmarks/benchmark_reservoir.py [--skip-cpu] [--skip-gpu] [--threads-sweep]
                                             [--peak-tflops X --peak-gbps Y]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from aphrodite.reservoir import EchoStatePropertyWarning, Reservoir, Ridge  # noqa: E402

# fp32 FMA TFLOP/s and HBM GB/s from the vendors' datasheets, matched on the device name
PEAKS = {"H200": (67.0, 4800.0), "H100 PCIe": (51.0, 2000.0), "H100": (67.0, 3350.0), "A100": (19.5, 2039.0)}


def machine() -> str:
    cpu = f"{os.cpu_count()}-core {platform.machine()} CPU"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    # other tenants' load changes CPU timings several-fold on small shared hosts: print it
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{cpu}{load}, torch {torch.__version__}, {gpu}"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds (best-of filters noise from shared hosts)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def cpu_section(batch: int = 64, steps: int = 1000, units: int = 256) -> None:
    from reservoirpy.datasets import mackey_glass
    from reservoirpy.nodes import Reservoir as RpyReservoir
    from reservoirpy.nodes import Ridge as RpyRidge

    series = mackey_glass(batch * steps + 1)  # (batch*steps+1, 1)
    u = series[:-1].reshape(batch, steps, 1)  # 64 consecutive segments
    y = series[1:].reshape(batch, steps, 1)  # one-step-ahead targets
    n_train, warmup = batch * 3 // 4, 100

    rp = RpyReservoir(units, sr=1.25, lr=0.3, seed=0)  # reservoirpy's README settings, 256 units; float64
    rp.initialize(u[0])
    rp_states = None

    def rpy_run() -> None:
        nonlocal rp_states
        rp.reset()
        rp_states = rp.run(u)  # its own batched call: (B, T, 1) array in, (B, T, N) out, every sequence from 0

    rows, results = [], {}
    t_rpy = best_time(rpy_run, repeats=2)
    readout = RpyRidge(ridge=1e-5).fit(list(rp_states[:n_train]), list(y[:n_train]), warmup=warmup)
    pred = np.stack(readout.run(list(rp_states[n_train:])))
    results["reservoirpy 0.4.2 `Reservoir.run` (float64, sparse W)"] = (t_rpy, "1 / 1", rp_states, pred)
    cores = torch.get_num_threads()
    # the default threads (chosen per run: threads=None), then fixed counts for like-for-like rows
    for dtype, threads in (("float32", None), ("float64", None), ("float32", 1), ("float64", 1),
                           ("float32", cores), ("float64", cores)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EchoStatePropertyWarning)  # sr = 1.25: rho ~ 1.07, as in the README
            ours = Reservoir.from_matrices(rp.W, rp.Win, rp.bias, lr=0.3, dtype=dtype, threads=threads)
        u_t = torch.from_numpy(u)
        chosen = ours.run_threads(batch, steps)
        used = f"{chosen.drive} / {chosen.step}"
        states = ours.run(u_t, x0=torch.zeros(units))
        # fewer repeats with several threads: on a busy host one such run can take seconds
        t_ours = best_time(lambda: ours.run(u_t, x0=torch.zeros(units)), repeats=5 if chosen.step == 1 else 2)
        ridge = Ridge(ridge=1e-5).fit(states[:n_train], torch.from_numpy(y[:n_train]), warmup=warmup)
        pred = ridge.run(states[n_train:].double()).numpy()
        label = "default threads" if threads is None else f"{threads} thread{'s' * (threads > 1)} fixed"
        results[f"aphrodite `Reservoir.run` ({dtype}, batched, {label})"] = (
            t_ours, str(used), states.double().numpy(), pred,
        )  # fmt: skip
    for name, (t, used, states, pred) in results.items():
        rmse = np.sqrt(np.mean((pred[:, warmup:] - y[n_train:, warmup:]) ** 2))
        rows.append([
            name, used, f"{t * 1e3:.1f}", f"{t_rpy / t:.1f}x", f"{np.abs(states - rp_states).max():.1e}", f"{rmse:.3e}",
        ])  # fmt: skip
    print_table(
        f"CPU: B={batch} sequences x T={steps} steps, N={units}, same matrices (machine: {machine()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})",
        ["method", "threads (drive / step)", "run time (ms)", "speed-up", "max |state - reservoirpy|", "forecast test RMSE"],
        rows,
    )


def threads_section(repeats: int = 3) -> None:
    """Per-step cost of the CPU scan at one thread and at every core, over the per-step work 2 B N^2: where a
    second thread starts to pay (``aphrodite/reservoir/threads.py``'s ``MIN_PARALLEL_FLOPS`` comes from here)."""
    from aphrodite.kernels.reservoir_step import reservoir_scan_reference

    cores, rows = torch.get_num_threads(), []
    for dtype in (torch.float32, torch.float64):
        for N in (64, 128, 256, 512):
            for B in (1, 8, 64, 256):
                flops = 2 * B * N * N
                T = max(20, min(2000, int(4e7 / flops)))  # about 20-60 ms of work per measurement
                g = torch.Generator().manual_seed(0)
                drive = torch.randn(1, B, T, N, generator=g, dtype=dtype)
                w = torch.randn(1, N, N, generator=g, dtype=dtype) * (0.9 / N**0.5)
                lr, x0 = torch.full((1,), 0.3, dtype=dtype), torch.zeros(1, B, N, dtype=dtype)
                per_step = {}
                for threads in (1, cores):
                    torch.set_num_threads(threads)
                    per_step[threads] = best_time(lambda: reservoir_scan_reference(drive, w, lr, x0), repeats) / T
                torch.set_num_threads(cores)
                rows.append([str(dtype).removeprefix("torch."), str(N), str(B), f"{flops / 1e6:.3f}",
                             f"{per_step[1] * 1e6:.1f}", f"{per_step[cores] * 1e6:.1f}",
                             f"{per_step[1] / per_step[cores]:.2f}x"])
    print_table(
        f"CPU scan per step, 1 thread vs {cores} (machine: {machine()}, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')})",
        ["dtype", "N", "B", "MFLOP / step", "us / step, 1 thread", f"us / step, {cores} threads", "speed-up"],
        rows,
    )


def gpu_section(peak_tflops: float | None, peak_gbps: float | None) -> None:
    import triton.testing

    from aphrodite.kernels.reservoir_step import reservoir_scan_reference, reservoir_scan_triton

    name = torch.cuda.get_device_name()
    if peak_tflops is None or peak_gbps is None:
        match = next((v for k, v in PEAKS.items() if k in name), None)
        if match is None:
            raise SystemExit(f"unknown peaks for {name!r}: pass --peak-tflops and --peak-gbps")
        peak_tflops, peak_gbps = peak_tflops or match[0], peak_gbps or match[1]
    T, D, rows = 512, 32, []
    for N in (128, 256, 1024, 2048):  # 128: the register-resident path; the rest: tiled
        for B in (1, 64, 256):
            g = torch.Generator(device="cuda").manual_seed(0)
            u = torch.randn(B, T, D, device="cuda", generator=g)
            w = torch.randn(N, N, device="cuda", generator=g) * (0.9 / N**0.5)  # sr ~ 0.9 (circular law)
            w_in = torch.randn(N, D, device="cuda", generator=g) * 0.1
            w_bf16 = w.bfloat16()
            lr, x0 = torch.ones(1, device="cuda"), torch.zeros(1, B, N, device="cuda")
            rnn = torch.nn.RNN(D, N, nonlinearity="tanh", batch_first=True, bias=False).cuda()
            with torch.no_grad():
                rnn.weight_ih_l0.copy_(w_in)
                rnn.weight_hh_l0.copy_(w)

            def drive() -> torch.Tensor:
                return (u @ w_in.T)[None]  # (1, B, T, N): the hoisted input GEMM, in every timing

            methods = {
                "triton fp32 W": lambda: reservoir_scan_triton(drive(), w[None], lr, x0),
                "triton bf16 W": lambda: reservoir_scan_triton(drive(), w_bf16[None], lr, x0),
                "torch eager loop": lambda: reservoir_scan_reference(drive(), w[None], lr, x0),
                "cuDNN nn.RNN": lambda: rnn(u)[0],
            }
            reference = reservoir_scan_reference(drive().double(), w[None].double(), lr.double(), x0.double())[0, :, 1:]
            for method, fn in methods.items():
                with torch.no_grad():
                    out = fn()
                    out = out[0, :, 1:] if out.dim() == 4 else out
                    err = (out.double() - reference).abs().max().item()
                    ms = triton.testing.do_bench(fn, warmup=5, rep=50)
                w_bytes = 2 if "bf16" in method else 4
                flops, bytes_moved = 2 * B * N * N, N * N * w_bytes + 2 * B * N * 4
                floor_s = max(flops / (peak_tflops * 1e12), bytes_moved / (peak_gbps * 1e9))
                us_step = ms * 1e3 / T
                rows.append([
                    str(N), str(B), method, f"{us_step:.2f}", f"{100 * floor_s * 1e6 / us_step:.1f}%", f"{err:.1e}",
                ])  # fmt: skip
    print_table(
        f"GPU: T={T}, input D={D}, lr=1 (machine: {machine()}; peaks {peak_tflops} TFLOP/s fp32, {peak_gbps} GB/s)",
        ["N", "B", "method", "us / step", "of floor", "max |state - fp64 ref|"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--threads-sweep", action="store_true",
                        help="also time the CPU scan per step at 1 thread and at every core over B and N")
    parser.add_argument("--peak-tflops", type=float, default=None, help="fp32 FMA peak of the GPU")
    parser.add_argument("--peak-gbps", type=float, default=None, help="memory bandwidth of the GPU")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_cpu:
        cpu_section()
    if args.threads_sweep:
        threads_section()
    if not args.skip_gpu:
        if torch.cuda.is_available():
            gpu_section(args.peak_tflops, args.peak_gbps)
        else:
            print("\nGPU section skipped: CUDA is not available on this machine.")


if __name__ == "__main__":
    main()
