"""The tasks: each fixes its loss, head size and metrics for every backend alike."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import converters
from converters.graph import archs_of

from .config import MODEL_TASK


class Task:
    name = ""
    higher_is_better = True
    metric = ""

    @property
    def model_task(self) -> str:
        """``invariant`` or ``equivariant``: the model the task trains."""
        return MODEL_TASK[self.name]

    def out_dim(self, graphs):
        return 1

    def loss(self, out, batch):
        raise NotImplementedError

    def evaluate(self, outs: list, batches: list) -> dict:
        raise NotImplementedError

    def predictions(self, out, batch) -> torch.Tensor:
        """What the model predicts for each network, (B, ...): a function of the input network
        alone, the same for every element of its symmetry group when the model respects it
        (classification: the class; generalisation: the predicted accuracy; editing: the edited
        network's image). ``robustness.prediction_changes`` compares these."""
        raise NotImplementedError

    #: what the reference level of the metric is (``None``: the task has none beyond chance)
    reference_name = None

    def reference_output(self, batch):
        """The output of the trivial model whose metric is the task's reference level (editing:
        the input networks left as they are)."""
        raise NotImplementedError


class InrClassification(Task):
    """Cross-entropy on the class; metric: accuracy."""
    name, metric = "inr_classification", "accuracy"

    def out_dim(self, graphs):
        return int(max(int(g.y) for g in graphs)) + 1

    def loss(self, out, batch):
        return F.cross_entropy(out, batch.y.view(-1).long())

    def evaluate(self, outs, batches):
        pred = torch.cat([o.argmax(1) for o in outs])
        y = torch.cat([b.y.view(-1) for b in batches])
        loss = sum(F.cross_entropy(o, b.y.view(-1).long(), reduction="sum").item()
                   for o, b in zip(outs, batches)) / len(y)
        return {"accuracy": float((pred == y).float().mean()), "loss": loss}

    def predictions(self, out, batch):
        return out.argmax(1)


class Generalization(Task):
    """sigmoid(output) regressed on the test accuracy with MSE; metrics: Kendall tau, R^2, L1."""
    name, metric = "generalization", "kendall_tau"

    def loss(self, out, batch):
        return F.mse_loss(torch.sigmoid(out[:, 0]), batch.y.view(-1).to(out.dtype))

    def evaluate(self, outs, batches):
        from scipy.stats import kendalltau
        p = torch.cat([torch.sigmoid(o[:, 0]) for o in outs]).double().cpu()
        y = torch.cat([b.y.view(-1) for b in batches]).double().cpu()
        tau = kendalltau(p.numpy(), y.numpy()).statistic
        ss = float(((y - y.mean()) ** 2).sum())
        r2 = 1 - float(((p - y) ** 2).sum()) / ss if ss > 0 else float("nan")
        return {"kendall_tau": float(tau) if not math.isnan(tau) else 0.0, "r2": r2,
                "l1": float((p - y).abs().mean()), "loss": float(((p - y) ** 2).mean())}

    def predictions(self, out, batch):
        return torch.sigmoid(out[:, 0])


class InrEditing(Task):
    """The edited SIREN, rendered on its convention's grid, against the target image (MSE)."""
    name, metric, higher_is_better = "inr_editing", "mse", False

    def _render(self, edited, batch):
        from ..data.conventions import SirenConvention, coordinates
        arch = archs_of(batch)[0]
        conv = SirenConvention.from_dict(arch.meta["convention"])
        H, W = batch.target.shape[-2:]
        dense = converters.to_dense(edited)
        xy = coordinates(H, W, conv, edited.x.dtype).to(edited.x.device)
        img = converters.functional_forward(dense, xy)[..., 0].view(-1, H, W)
        lo, hi = conv.target_range
        return (img - lo) / (hi - lo)     # back to [0, 1], the targets' range

    def loss(self, out, batch):
        return F.mse_loss(self._render(out, batch), batch.target.to(out.x.dtype))

    def predictions(self, out, batch):
        return self._render(out, batch)

    reference_name = "unedited"

    def reference_output(self, batch):
        """The identity edit: the input SIRENs, rendered against the targets as they are."""
        return batch

    def evaluate(self, outs, batches):
        err = [((self._render(o, b) - b.target.to(o.x.dtype)) ** 2).mean(dim=(1, 2))
               for o, b in zip(outs, batches)]
        return {"mse": float(torch.cat(err).mean()), "loss": float(torch.cat(err).mean())}


TASK_CLASSES = {t.name: t for t in (InrClassification, Generalization, InrEditing)}
