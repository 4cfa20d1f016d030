"""The ServerApp: Flower's FedAvg over every hospital, each round's global model kept.

Every hospital trains in every round (``fraction_train=1``, ``min_train_nodes`` =
``min_available_nodes`` = the number of hospitals); there is no client-side evaluation
round (``fraction_evaluate=0``). After each aggregation the global model is written to
``out-dir`` as safetensors with its wall-clock time, and the benchmark evaluates them
afterwards with hefl's evaluation code, as it does hefl's published models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from safetensors.numpy import save_file

from benchmarks.flower._data import load_site, sites_of
from fl_client.models import build_model, resolve_model

app = ServerApp()


@app.main()  # type: ignore[untyped-decorator]  # flwr is typed only in its own venv
def main(grid: Grid, context: Context) -> None:
    """FedAvg for ``num-server-rounds`` rounds from hefl's initial model of ``seed``."""
    run = context.run_config
    out = Path(str(run["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "rounds.jsonl"
    n_nodes = int(run["num-nodes"])
    data = str(run["data"])
    first = load_site(data, sites_of(data)[0])
    model = build_model(
        resolve_model("logistic"), first.input_shape, first.n_classes, int(run["seed"])
    )

    def keep(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        now = time.time()
        tensors = {k: v.numpy() for k, v in arrays.to_torch_state_dict().items()}
        save_file(tensors, str(out / f"round-{server_round:04d}.safetensors"))
        with journal.open("a") as f:
            f.write(json.dumps({"round": server_round, "time": now}) + "\n")
        return None

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=n_nodes,
        min_available_nodes=n_nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(run["num-server-rounds"]),
        train_config=ConfigRecord(),
        evaluate_fn=keep,
    )
    summary = {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()}
    (out / "train_metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "done").write_text(f"{time.time()}\n")
