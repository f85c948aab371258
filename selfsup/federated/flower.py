"""Federated pretraining on Flower: a client that trains any registered method for a round
with the engine, and a strategy wrapper that turns Flower's rounds into a selfsup run folder.

What crosses the wire is the method's whole ``state_dict`` (encoder, heads, predictor, EMA
teacher, BatchNorm statistics, queues), in its fixed order, as numpy arrays; Flower's FedAvg
or FedProx averages them weighted by each client's number of samples (McMahan et al. 2017).
The rules for the parts that are not plain weights, and why:

- EMA teachers (BYOL, MoCo, DINO, data2vec) are averaged like the student, so every client
  starts a round from one global teacher. This is the "global target" FedBYOL baseline of
  Zhuang et al. (ICCV 2021, arXiv:2108.06492; ICLR 2022, arXiv:2204.04385); their FedU and
  FedEMA keep the target on the client between rounds, which needs client state that
  Flower's stateless virtual clients do not keep: not done here.
- BatchNorm running statistics are averaged too (FedAvg's rule). FedBN (Li et al. ICLR 2021,
  arXiv:2102.07623) keeps them local, which gives each client its own model; a federated
  pretraining run exports one encoder, so its statistics must be global.
- Integer buffers (BatchNorm's batch counter) travel as floats, are averaged and rounded.
- MoCo's queue of keys is averaged slot by slot, which mixes unrelated keys: the queue
  refills in ``queue_size / batch`` local steps, so keep ``local_steps`` well above that.

Each client trains with a fresh optimizer per round (FedAvg's clients are stateless), on the
steps ``(r-1)·L .. r·L`` of one cosine schedule over ``rounds × L`` steps.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from selfsup.config import RunConfig, dump_yaml, make_config, to_dict
from selfsup.engine import checkpoint
from selfsup.errors import SelfsupError
from selfsup.federated.partition import Partition, partition_indices

INSTALL = 'federated pretraining needs Flower: pip install "selfsup[federated]"'


def require_flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise SelfsupError(INSTALL) from None


def method_state(method: nn.Module) -> list[np.ndarray]:
    """The method's whole state as float32 numpy arrays, in ``state_dict`` order; integer
    buffers too, so that the strategy averages them as numbers (Flower's in-place FedAvg
    truncates the scaled terms of an integer array) and ``load_method_state`` rounds them."""
    return [v.detach().cpu().float().numpy().copy() for v in method.state_dict().values()]


def load_method_state(method: nn.Module, arrays: list[np.ndarray]) -> None:
    """Load arrays made by ``method_state`` (or their weighted mean) into ``method``."""
    own = method.state_dict()
    if len(arrays) != len(own):
        raise SelfsupError(
            f"the server sent {len(arrays)} arrays but this client's model has {len(own)}: "
            "client and server must build the same method and encoder"
        )
    state = {}
    for (key, value), array in zip(own.items(), arrays):
        tensor = torch.from_numpy(np.asarray(array)).reshape(value.shape)
        if not value.is_floating_point():
            tensor = tensor.round()  # an averaged counter
        state[key] = tensor.to(value.dtype)
    method.load_state_dict(state)


def proximal_hooks(method: nn.Module, mu: float) -> list[Any]:
    """FedProx (Li et al. 2020, arXiv:1812.06127): add mu·(w − w_global) to each trainable
    weight's gradient, the gradient of the proximal term mu/2·||w − w_global||². The global
    weights are those the method holds now (the round's start)."""
    handles = []
    for p in method.parameters():
        if p.requires_grad:
            anchor = p.detach().clone()
            handles.append(p.register_hook(lambda g, p=p, a=anchor: g + mu * (p.detach() - a)))
    return handles


def client_config(text: str) -> RunConfig:
    """The run config the server sent (its config.yaml), parsed without executing anything."""
    return make_config(yaml.safe_load(text))


class LocalTrainer:
    """One client's side of the federation: its share of the data, the method, and a round of
    local training on the engine."""

    def __init__(self, cfg: RunConfig, client: int, folder: Path) -> None:
        from selfsup.methods import build_method
        from selfsup.modalities import modality_of_data
        from selfsup.pretraining import build_run_encoder, training_data

        self.cfg, self.client = cfg, client
        modality_of_data(cfg.data.name).prepare_run(cfg.data, folder)
        dataset, info = training_data(cfg, folder, world=1)
        fed = cfg.federated
        parts = partition_indices(
            len(dataset),
            fed.clients,
            fed.partition,
            labels=dataset.labels() if callable(getattr(dataset, "labels", None)) else None,
            alpha=fed.alpha,
            column=fed.partition_column,
            seed=cfg.train.seed,
        )
        self.data = Partition(dataset, parts[client])
        if len(self.data) < cfg.train.batch_size:
            raise SelfsupError(
                f"client {client} holds {len(self.data)} samples, fewer than one batch of "
                f"{cfg.train.batch_size}: lower --batch-size or use fewer clients"
            )
        torch.manual_seed(cfg.train.seed)
        self.method = build_method(cfg.method, cfg.method_args, build_run_encoder(cfg, info), info)

    def fit(
        self, arrays: list[np.ndarray], round_: int, mu: float
    ) -> tuple[list[np.ndarray], dict]:
        """Train from the global ``arrays`` for the round's local steps; the new arrays and
        metrics (mean loss of the round, this client's id)."""
        from selfsup.engine import make_fabric, train

        load_method_state(self.method, arrays)
        local = local_run_config(self.cfg, self.client, round_)
        L = self.cfg.federated.local_steps
        handles = proximal_hooks(self.method, mu) if mu > 0 else []
        try:
            result = train(
                make_fabric(local, None),
                local,
                self.method,
                self.data,
                None,
                start_step=(round_ - 1) * L,
                stop_at=round_ * L,
                description=f"client {self.client} round {round_}",
            )
        finally:
            for h in handles:
                h.remove()
        loss = float(np.mean(list(result.losses.values()))) if result.losses else math.nan
        return method_state(self.method), {"loss": loss, "client": self.client}


def local_run_config(cfg: RunConfig, client: int, round_: int) -> RunConfig:
    """A client's engine config for one round: one process, the run's whole step schedule,
    and a seed of its own per client and round (augmentations and data order differ)."""
    local = copy.deepcopy(cfg)
    t = local.train
    t.max_steps = cfg.federated.rounds * cfg.federated.local_steps
    t.max_epochs, t.max_time = None, None
    t.devices, t.num_nodes, t.strategy = 1, 1, "auto"
    t.seed = (cfg.train.seed + 1_000_003 * (client + 1) + 7919 * round_) % 2**32
    t.progress = False
    return local


def make_client(client: int, folder: Path) -> Any:
    """A Flower client for client number ``client``; it builds its trainer from the config
    the server sends with the first round."""
    from flwr.client import NumPyClient

    class SelfsupClient(NumPyClient):
        trainer: LocalTrainer | None = None

        def get_properties(self, config: dict) -> dict:
            return {"client": client}

        def fit(self, parameters: list[np.ndarray], config: dict) -> tuple:
            if self.trainer is None:
                self.trainer = LocalTrainer(client_config(str(config["config"])), client, folder)
            arrays, metrics = self.trainer.fit(
                parameters, int(config["round"]), float(config.get("proximal_mu", 0.0))
            )
            return arrays, len(self.trainer.data), metrics

    return SelfsupClient()


class RoundLog:
    """What the server keeps of each round: the global model as a checkpoint of the run, a
    metrics row, and ``federated.json`` (who trained, who dropped, the loss)."""

    def __init__(
        self, fabric: Any, cfg: RunConfig, method: nn.Module, run_dir: Path, first: int
    ) -> None:
        self.fabric, self.cfg, self.method, self.run_dir = fabric, cfg, method, run_dir
        self.first = first
        path = run_dir / "federated.json"
        self.rounds: list[dict] = json.loads(path.read_text())["rounds"] if path.is_file() else []
        self.rounds = [r for r in self.rounds if r["round"] < first]
        self.started = time.perf_counter()

    def record(self, round_: int, arrays: list[np.ndarray] | None, entry: dict) -> None:
        L = self.cfg.federated.local_steps
        step = round_ * L
        if arrays is not None:
            load_method_state(self.method, arrays)
            state = {
                "method": self.method,
                "step": step,
                "round": round_,
                "horizon": self.cfg.federated.rounds * L,
                "elapsed": time.perf_counter() - self.started,
                "rng_cpu": torch.get_rng_state(),
            }
            checkpoint.save(self.fabric, self.run_dir, step, state)
            if math.isfinite(entry.get("loss", math.nan)):
                self.fabric.log_dict(
                    {"loss": entry["loss"], "round": round_, "clients": len(entry["trained"])},
                    step=step,
                )
        self.rounds.append({"round": round_, "step": step, **entry})
        body = {"config": to_dict(self.cfg.federated), "rounds": self.rounds}
        tmp = self.run_dir / "federated.json.tmp"
        tmp.write_text(json.dumps(body, indent=1))
        tmp.replace(self.run_dir / "federated.json")


def make_strategy(cfg: RunConfig, initial: list[np.ndarray], log: RoundLog) -> Any:
    """Flower's FedAvg or FedProx, wrapped so each round also sends the run config and its
    number, identifies the sampled clients, and is recorded in the run folder."""
    from flwr.common import GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg, FedProx, Strategy

    fed = cfg.federated
    needed = fed.min_clients or fed.clients
    common = dict(
        fraction_fit=fed.fraction_fit,
        fraction_evaluate=0.0,
        min_fit_clients=needed,
        min_evaluate_clients=0,
        min_available_clients=needed,
        initial_parameters=ndarrays_to_parameters(initial),
        accept_failures=True,
    )
    inner = (
        FedProx(proximal_mu=fed.proximal_mu, **common)
        if fed.strategy == "fedprox"
        else FedAvg(**common)
    )
    config_text = dump_yaml({**to_dict(cfg), "out": None})

    class Recorded(Strategy):
        names: dict[str, int] = {}
        sampled: dict[int, list[str]] = {}

        def initialize_parameters(self, client_manager: Any) -> Any:
            return inner.initialize_parameters(client_manager)

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list:
            round_ = server_round + log.first - 1
            if server_round == 1:  # the federation forms: wait for every client once
                client_manager.wait_for(fed.clients, timeout=fed.round_timeout or 86400)
            pairs = inner.configure_fit(server_round, parameters, client_manager)
            for proxy, ins in pairs:
                if proxy.cid not in self.names:
                    props = proxy.get_properties(
                        GetPropertiesIns({}), timeout=None, group_id=server_round
                    )
                    self.names[proxy.cid] = int(props.properties["client"])
                ins.config.update({"round": round_, "config": config_text})
            self.sampled[server_round] = [proxy.cid for proxy, _ in pairs]
            return pairs

        def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple:
            round_ = server_round + log.first - 1
            trained = sorted(int(res.metrics["client"]) for _, res in results)
            dropped = sorted(set(self.names[c] for c in self.sampled[server_round]) - set(trained))
            n = [res.num_examples for _, res in results]
            losses = [float(res.metrics["loss"]) for _, res in results]
            entry = {
                "trained": trained,
                "dropped": dropped,
                "samples": dict(zip(map(str, trained), map(int, n))),
                "loss": float(np.average(losses, weights=n)) if results else math.nan,
            }
            if len(results) < needed:
                entry["aggregated"] = False
                log.record(round_, None, entry)
                return None, {}
            parameters, metrics = inner.aggregate_fit(server_round, results, failures)
            entry["aggregated"] = parameters is not None
            log.record(round_, parameters_to_ndarrays(parameters) if parameters else None, entry)
            return parameters, metrics

        def configure_evaluate(
            self, server_round: int, parameters: Any, client_manager: Any
        ) -> list:
            return []

        def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> None:
            return None

    return Recorded()
