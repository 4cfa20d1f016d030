"""The ClientApp: one hospital's local training with hefl's data loader and training code.

Each SuperNode says which hospital it is (``--node-config 'site="..." step-delay=...'``).
A round loads the global model, trains exactly as hefl's client does
(``fl_client.training.train_local``: same optimizer, steps, batch size and batch-order
seed ``round_seed(seed, round - 1)``), sleeps ``step-delay`` seconds per step as hefl's
``--step-delay`` does, and replies with the trained weights and its training-row count
(FedAvg's weight).
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

_FLWR_READY = time.perf_counter()

# hefl's data loader and training code (torch, not TenSEAL nor the rest of the client: the
# packages load their names lazily); the reply reports how long that took in this process
from benchmarks.flower._data import load_site  # noqa: E402
from fl_client.models import build_model, resolve_model  # noqa: E402
from fl_client.training import TrainConfig, round_seed, train_local  # noqa: E402

_HEFL_READY = time.perf_counter()

app = ClientApp()


@app.train()  # type: ignore[untyped-decorator]  # flwr is typed only in its own venv
def train(msg: Message, context: Context) -> Message:
    """Train on this hospital's rows from the global model the message carries."""
    run = context.run_config
    site = str(context.node_config["site"])
    delay = float(context.node_config.get("step-delay", 0.0))
    seed = int(run["seed"])
    server_round = int(msg.content["config"]["server-round"])
    data = load_site(str(run["data"]), site)
    model = build_model(resolve_model("logistic"), data.input_shape, data.n_classes, seed)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    config = TrainConfig(
        steps=int(run["local-steps"]), batch_size=int(run["batch-size"]), lr=float(run["lr"])
    )

    def on_step(_loss: float) -> None:
        if delay:
            time.sleep(delay)

    started = time.perf_counter()
    result = train_local(model, data.train, config, round_seed(seed, server_round - 1), on_step)
    metrics = MetricRecord(
        {
            "num-examples": len(data.train),
            "train-loss": result.mean_loss,
            "train-seconds": time.perf_counter() - started,
            "import-flwr-seconds": _FLWR_READY - _STARTED,
            "import-hefl-seconds": _HEFL_READY - _FLWR_READY,
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)
