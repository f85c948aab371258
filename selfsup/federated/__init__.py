"""Federated self-supervised pretraining on Flower (``selfsup federate``).

The server side builds the run exactly as ``selfsup pretrain`` does (config, run folder,
encoder and method from ``selfsup.pretraining``), lets Flower run the rounds, keeps the global
model of every round as a checkpoint of the run, and ends with the same export and
evaluation. Clients train on the engine (``selfsup.engine.train``), one stretch of the run's
schedule per round. Two ways to run it:

- ``federate(...)``: a Flower simulation on one machine, one client per partition: Flower's
  clients in threads talking gRPC to Flower's server on the loopback address (default), or
  Flower's simulation engine on Ray (``federated.simulation=ray``).
- ``federate(..., serve="0.0.0.0:8080")`` and, on each device, ``join("SERVER:8080",
  client=K)``: a Flower server and clients as separate processes over gRPC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfsup.config import dump_yaml, make_config, to_dict
from selfsup.errors import SelfsupError
from selfsup.federated.flower import (
    RoundLog,
    make_client,
    make_strategy,
    method_state,
    require_flower,
)

__all__ = ["federate", "join"]


def federate(
    config: Any = None,
    *,
    serve: str | None = None,
    resume: str | Path | None = None,
    evaluate: bool = True,
    overrides: list[str] | tuple[str, ...] = (),
    **sections: Any,
) -> Any:
    """Pretrain across ``federated.clients`` clients; returns a ``selfsup.pretraining.Run``.

    ``serve`` (HOST:PORT) runs a Flower server for client processes (``join``) instead of a
    simulation; ``resume`` continues a federated run folder from its last complete round.
    """
    require_flower()
    from selfsup.engine import TrainResult, make_fabric
    from selfsup.engine.checkpoint import latest_checkpoint, load
    from selfsup.methods import build_method
    from selfsup.modalities import modality_of_data
    from selfsup.pretraining import (
        Run,
        _new_run_dir,
        build_run_encoder,
        export_run_encoder,
        has_labels,
        training_data,
    )
    from selfsup.recipe import fit_to_data, say_choices

    resume_from = None
    if resume is not None:
        run_dir = Path(resume)
        resume_from = latest_checkpoint(run_dir)
        if resume_from is None:
            raise SelfsupError(f"{run_dir} holds no checkpoint to resume from")
        cfg = make_config(config or run_dir / "config.yaml", overrides, **sections)
    else:
        cfg = make_config(config, overrides, **sections)
        run_dir = _new_run_dir(cfg)
        if latest_checkpoint(run_dir) is not None:
            raise SelfsupError(
                f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, or choose another --out"
            )
    fed, t = cfg.federated, cfg.train
    if t.max_time is not None:
        raise SelfsupError(
            "a federated run is budgeted in rounds × local steps, not time: drop --max-time "
            "and set --rounds and --local-steps"
        )
    if t.devices * t.num_nodes > 1:
        raise SelfsupError(
            "each federated client trains in one process: drop --devices/--num-nodes"
        )
    modality_of_data(cfg.data.name).prepare_run(cfg.data, run_dir)
    _, info = training_data(cfg, run_dir, world=1)
    cfg, choices = fit_to_data(cfg, info)  # the clients get the fitted config.yaml
    say_choices(choices)
    import torch

    torch.manual_seed(t.seed)
    method = build_method(cfg.method, cfg.method_args, build_run_encoder(cfg, info), info)
    fabric = make_fabric(cfg, run_dir)
    first = 1
    if resume_from is not None:
        extra = load(fabric, resume_from, {"method": method})
        first = int(extra.get("round", int(extra["step"]) // fed.local_steps)) + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml({**to_dict(cfg), "out": None}))

    log = RoundLog(fabric, cfg, method, run_dir, first)
    rounds = fed.rounds - first + 1
    if rounds > 0:
        strategy = make_strategy(cfg, method_state(method), log)
        _run_rounds(cfg, strategy, rounds, serve, run_dir)
    for logger in fabric.loggers:
        logger.finalize("success")
    steps = fed.rounds * fed.local_steps
    export_run_encoder(method.encoder, run_dir, cfg, info, step=steps)
    result = TrainResult(run_dir, (first - 1) * fed.local_steps, steps, "rounds")
    result.losses = {r["step"]: r["loss"] for r in log.rounds if r.get("aggregated")}
    run = Run(run_dir, result)
    if evaluate and has_labels(cfg.eval.data or cfg.data.name, cfg, run_dir):
        from selfsup.evaluate.run import evaluate_run

        run.eval_rows = evaluate_run(run_dir, cfg=cfg)
    return run


def _run_rounds(cfg: Any, strategy: Any, rounds: int, serve: str | None, run_dir: Path) -> None:
    """Flower runs the rounds: a server for client processes (``serve``), or a simulation with
    Flower's clients in threads of this process over loopback gRPC (``threads``, the fast
    start on a CPU machine) or as Ray actors (``ray``, Flower's simulation engine)."""
    from flwr.server import Server, ServerConfig, SimpleClientManager, start_server

    server_config = ServerConfig(num_rounds=rounds, round_timeout=cfg.federated.round_timeout)
    server = Server(client_manager=SimpleClientManager(), strategy=strategy)
    if serve is not None:
        start_server(server_address=serve, server=server, config=server_config)
        return
    clients_folder = run_dir / "clients"
    if cfg.federated.simulation == "ray":
        from flwr.simulation import start_simulation

        def client_fn(context: Any) -> Any:
            k = int(context.node_config["partition-id"])
            return make_client(k, clients_folder / str(k)).to_client()

        start_simulation(
            client_fn=client_fn,
            num_clients=cfg.federated.clients,
            config=server_config,
            strategy=strategy,
            client_resources={"num_cpus": 1},
            ray_init_args={"include_dashboard": False},
        )
        return
    import threading

    from flwr.client import start_client
    from flwr.server.server import run_fl
    from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

    address = f"127.0.0.1:{_free_port()}"
    # listening before the clients dial, so none waits out a reconnection back-off
    grpc_server = start_grpc_server(client_manager=server.client_manager(), server_address=address)
    server.set_max_workers(1)  # one client trains at a time: one process's cores and RNG
    try:
        for k in range(cfg.federated.clients):
            client = make_client(k, clients_folder / str(k)).to_client()
            threading.Thread(
                target=start_client,
                kwargs={"server_address": address, "client": client, "max_wait_time": 600},
                daemon=True,
            ).start()
        run_fl(server=server, config=server_config)
    finally:
        grpc_server.stop(grace=1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def join(server: str, client: int, folder: str | Path | None = None, wait: float = 600.0) -> None:
    """Run client number ``client`` of a federation served at ``server`` (HOST:PORT) until
    the server ends the run; its data share and the method come with the server's config. A
    client may start before its server: it waits up to ``wait`` seconds for it to listen."""
    require_flower()
    from flwr.client import start_client

    _wait_for(server, wait)
    start_client(
        server_address=server,
        client=make_client(client, Path(folder or f"runs/federated-client-{client}")).to_client(),
    )


def _wait_for(address: str, seconds: float) -> None:
    """Until a TCP connection to ``address`` succeeds (Flower's gRPC client gives up at once
    when the server does not listen yet)."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return
        except (OSError, ValueError) as error:
            if isinstance(error, ValueError) or time.monotonic() > deadline:
                raise SelfsupError(
                    f"no federated server listens at {address} (waited {seconds:.0f} s): start "
                    "it with `selfsup federate --serve HOST:PORT`"
                ) from None
            time.sleep(0.5)
