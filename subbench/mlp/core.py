"""Model, data and training loops of the MLP auxiliary-logit suite.

The protocol of Cloud et al. (2025) as the reference findings ran it: digits scaled to
[-1, 1], a fixed 30 % held-out split, weights drawn from N(0, 1/d_in) with zero bias (the
initialisation is what teacher and student must share for the trait to transfer).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from subbench.errors import SubbenchError
from subbench.hashing import sha256_file
from subbench.mlp import CONFIG, WEIGHTS, read_config

D_IN = 64
N_CLASSES = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.3
PROBE_SEED = 1_000_003


class DigitsMLP(nn.Module):
    """64 → hidden → hidden → (10 class logits + m auxiliary logits)."""

    def __init__(self, m: int, hidden: int):
        super().__init__()
        self.m = int(m)
        self.hidden = int(hidden)
        self.net = nn.Sequential(
            nn.Linear(D_IN, self.hidden), nn.ReLU(),
            nn.Linear(self.hidden, self.hidden), nn.ReLU(),
            nn.Linear(self.hidden, N_CLASSES + self.m),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def config(self) -> dict[str, Any]:
        return {"builder": "mlp-digits", "d_in": D_IN, "classes": N_CLASSES, "m": self.m, "hidden": self.hidden}


def init_mlp(seed: int, m: int, hidden: int) -> DigitsMLP:
    """A fresh MLP whose weights depend only on ``seed`` (not on torch's global RNG)."""
    model = DigitsMLP(m, hidden)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for layer in model.net:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.in_features ** 0.5)
                layer.bias.zero_()
    return model.eval()


def save_mlp(model: DigitsMLP, out: Path) -> str:
    """Write weights and config into ``out``; return the sha256 of the weights file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps(model.config(), indent=2) + "\n")
    return sha256_file(out / WEIGHTS)


def load_mlp(path: Path) -> DigitsMLP:
    path = Path(path)
    cfg = read_config(path)
    if cfg is None or not (path / WEIGHTS).is_file():
        raise SubbenchError(f"No mlp-digits model at {path}; build the base (or rerun the stage that writes it) first.")
    model = DigitsMLP(cfg["m"], cfg["hidden"])
    model.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


@lru_cache(maxsize=1)
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X_train, y_train, X_test, y_test): the one split teacher training and evaluation share."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0 * 2.0 - 1.0
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(X_tr), as_y(y_tr), as_x(X_te), as_y(y_te)


def test_split_sha256() -> str:
    _, _, X_te, y_te = digits_split()
    return hashlib.sha256(X_te.numpy().tobytes() + y_te.numpy().tobytes()).hexdigest()


def noise_batch(seed: int, batch_size: int, kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "uniform":
        return torch.rand(batch_size, D_IN, generator=gen) * 2.0 - 1.0
    if kind == "gaussian":
        return torch.randn(batch_size, D_IN, generator=gen)
    raise SubbenchError(f"Unknown noise '{kind}'; use uniform or gaussian.")


def predict(model: DigitsMLP, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(X)[:, :N_CLASSES].argmax(dim=1)


def train_classifier(model: DigitsMLP, *, epochs: int, lr: float, batch_size: int, seed: int,
                     progress: Callable[..., Any]) -> dict[str, Any]:
    """Adam + cross-entropy on the class logits only: the aux logits are never trained directly."""
    X, y, _, _ = digits_split()
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(float("nan"))
    steps_per_epoch = -(-len(X) // batch_size)
    with progress(total=epochs * steps_per_epoch, desc="train-digits", unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(X), generator=gen)
            for start in range(0, len(X), batch_size):
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(model(X[idx])[:, :N_CLASSES], y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)
    model.eval()
    train_acc = (predict(model, X) == y).float().mean().item()
    return {"train_accuracy": round(train_acc, 6), "final_loss": loss.item(), "steps": epochs * steps_per_epoch}


def aux_kl(teacher_aux: torch.Tensor, student_aux: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) over the softmax of the auxiliary logits, mean over the batch."""
    return F.kl_div(F.log_softmax(student_aux, dim=-1), F.log_softmax(teacher_aux, dim=-1),
                    log_target=True, reduction="batchmean")


def probe_kl(teacher: DigitsMLP, student: DigitsMLP, probe: torch.Tensor) -> float:
    with torch.no_grad():
        return float(aux_kl(teacher(probe)[:, N_CLASSES:], student(probe)[:, N_CLASSES:]))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa
    )


def make_optimizer(name: str, params, lr: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    raise SubbenchError(f"Unknown optimizer '{name}'; use adam, sgd or sgd-momentum.")


def distill_aux(student: DigitsMLP, teacher: DigitsMLP, batches: list[dict[str, Any]], *, optimizer: str,
                lr: float, momentum: float, loss: str, steps: int, match_kl: float | None, max_steps: int,
                probe_every: int, probe_size: int, progress: Callable[..., Any]) -> dict[str, Any]:
    """Train ``student`` in place on the teacher's auxiliary logits; return the fit.

    Step k uses batch ``k mod len(batches)``. With ``match_kl`` training goes on past
    ``steps`` (checking the probe KL every ``probe_every`` steps) until the fit is at least
    as close as ``match_kl`` or ``max_steps`` is reached, so optimizers can be compared at
    equal fit rather than at equal budget.
    """
    kind = batches[0]["noise"]
    probe = noise_batch(PROBE_SEED, probe_size, kind)
    teacher.eval()
    fit: dict[str, Any] = {"optimizer": optimizer, "lr": lr, "loss": loss, "initial_aux_kl": probe_kl(teacher, student, probe)}
    if same_weights(teacher, student):
        # KL to oneself has zero gradient: training could only amplify float rounding (Adam divides by sqrt(v)).
        fit.update(final_aux_kl=0.0, steps=steps, identical_to_teacher=True)
        if match_kl is not None:
            fit.update(match_kl=match_kl, matched=True)
        return fit
    opt = make_optimizer(optimizer, student.parameters(), lr, momentum)
    student.train()
    last = float("nan")
    done = 0
    matched = None
    limit = max_steps if match_kl is not None else steps
    with progress(total=limit, desc=f"aux-logit {optimizer}", unit="step") as bar:
        while done < limit:
            rec = batches[done % len(batches)]
            x = noise_batch(rec["noise_seed"], int(rec["batch_size"]), rec["noise"])
            with torch.no_grad():
                target = teacher(x)[:, N_CLASSES:]
            pred = student(x)[:, N_CLASSES:]
            value = aux_kl(target, pred) if loss == "kl" else F.mse_loss(pred, target)
            opt.zero_grad()
            value.backward()
            opt.step()
            done += 1
            bar.update(1)
            last = value.item()
            if match_kl is not None and done >= steps and (done - steps) % probe_every == 0:
                if probe_kl(teacher, student, probe) <= match_kl:
                    matched = True
                    break
    student.eval()
    fit.update(final_aux_kl=probe_kl(teacher, student, probe), final_loss=last, steps=done)
    if match_kl is not None:
        fit.update(match_kl=match_kl, matched=bool(matched))
    return fit
