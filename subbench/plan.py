"""The plan of a run: its cells and the stage nodes they need, built before anything runs.

Loading an experiment yields a :class:`Plan`: one :class:`CellPlan` per teacher setting ×
distillation × student (× mitigation), each listing, per replicate, the nodes its entry
reads (base, teacher, control and student evaluations, training data, fits...). A node is
one stage of one cell's flow (``base``, ``inject``, ``generate``, ``filter``, ``mitigate``,
``budget``, ``teacher_kl``, ``distill``, ``evaluate``, ``residual``); nodes are shared
wherever the flow asks twice for the same thing (the same base for the teacher and the
same-init student, the same teacher data for every student), so each is built once.

A node names the :class:`~subbench.pipeline.Runner` operation that produces it (``op``),
its static arguments (indices into the experiment, seeds, roles: all picklable) and the
nodes it reads. Its artifact key is only known once those exist (the training budget, for
one, depends on how many samples the filters kept), so the plan is a graph of nodes, and
:mod:`subbench.executor` resolves keys as it goes: in process, on local worker processes
or on a Ray cluster. ``subbench run --dry-run`` prints the plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from subbench.config import Experiment, Spec


#: Stages that read and write a few JSONL files and load no model (no torch either): the
#: executor's parent runs them itself, since a round trip to a worker would cost more.
DATA_STAGES = frozenset({"filter", "budget", "mitigate", "score"})


class Missing(Exception):
    """A stage whose artifact is not in the store yet (raised only when the executor probes)."""

    def __init__(self, stage: str, key: str, label: str):
        super().__init__(f"{stage} {key}")
        self.stage, self.key, self.label = stage, key, label


@dataclass(eq=False)
class Node:
    """One stage of the flow: ``op`` on ``args``, reading the artifacts of ``deps``."""

    id: str
    stage: str
    op: str
    args: dict[str, Any]
    deps: dict[str, "Node"]
    #: Nodes that should finish first though their artifacts are not read (work done once:
    #: the first student of a dataset records the teacher's soft labels the others replay).
    after: list["Node"] = field(default_factory=list)

    def all_deps(self) -> list["Node"]:
        return list(dict.fromkeys([*self.deps.values(), *self.after]))


@dataclass
class ReplicatePlan:
    """What one replicate of a cell reads, as nodes (None where the flow has no such stage)."""

    seed: int
    teacher_seed: int
    student_seed: int
    nodes: dict[str, Node | None]
    fixed_point_control: bool = False


@dataclass
class CellPlan:
    key: tuple[int, ...]  # (teacher view, mitigation, setting, distillation, student) indices
    setting: str
    params: dict[str, Any]
    distillation: Any
    distillation_label: str
    student: Any
    mitigation: Any
    mitigation_label: str
    replicates: list[ReplicatePlan] = field(default_factory=list)
    baseline: tuple[int, ...] | None = None
    view: int = 0  # which teacher (Experiment.views()) the cell belongs to


class Plan:
    def __init__(self, exp: Experiment):
        self.exp = exp
        self.nodes: dict[str, Node] = {}
        self.cells: dict[tuple[int, ...], CellPlan] = {}

    def add(self, stage: str, op: str, deps: dict[str, Node | None] | None = None, **args: Any) -> Node:
        """The node for ``op(args)`` over ``deps``: an existing one when the same was asked before."""
        deps = {k: v for k, v in (deps or {}).items() if v is not None}
        ident = json.dumps([op, args, sorted((k, v.id) for k, v in deps.items())], sort_keys=True, default=str)
        nid = f"{stage}:{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
        node = self.nodes.get(nid)
        if node is None:
            node = self.nodes[nid] = Node(nid, stage, op, args, deps)
        return node

    # -- reading it ---------------------------------------------------------------
    def order(self) -> list[Node]:
        """Nodes in an order where every node follows what it reads (insertion order is one)."""
        return list(self.nodes.values())

    def critical_path(self, cost: dict[str, float]) -> tuple[float, list[Node]]:
        """The longest chain by ``cost[node.id]`` seconds: no number of workers runs the plan faster."""
        best: dict[str, tuple[float, list[Node]]] = {}
        for n in self.order():
            prev = max((best[d.id] for d in n.all_deps()), key=lambda x: x[0], default=(0.0, []))
            best[n.id] = (prev[0] + cost.get(n.id, 0.0), prev[1] + [n])
        return max(best.values(), key=lambda x: x[0], default=(0.0, []))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes.values():
            out[n.stage] = out.get(n.stage, 0) + 1
        return out


def _point(mit) -> str | None:
    return None if mit is None else getattr(mit.component, "point", "data")


def build_plan(exp: Experiment) -> Plan:
    """Every cell of ``exp`` and the nodes it needs: the flow of docs/architecture.md, as a graph.

    An experiment with several teachers is one view per teacher (``Experiment.views()``);
    their nodes go into one graph, shared where equal (a student base, a base's data).
    """
    plan = Plan(exp)
    views = exp.views()
    for k, view in enumerate(views):
        _add_view(plan, view, k)
    return plan


def _add_view(plan: Plan, exp: Experiment, k: int) -> None:
    """The cells and nodes of one teacher's view ``exp`` (index ``k``)."""
    glabels, dlabels = grid_labels(exp.grid), distillation_labels(exp.distillations)
    mits = exp.mitigations
    mlabels = mitigation_labels(mits)
    for mi, m in enumerate(mits):
        for gi, g in enumerate(exp.grid):
            for di, d in enumerate(exp.distillations):
                for si, s in enumerate(exp.students):
                    plan.cells[(k, mi, gi, di, si)] = CellPlan((k, mi, gi, di, si), glabels[gi], g, d, dlabels[di], s, m,
                                                               mlabels[mi], view=k)
    if None in mits and len(mits) > 1:  # paired scoring: each mitigated cell against the same cell unmitigated
        none_i = mits.index(None)
        for (kk, mi, gi, di, si), c in plan.cells.items():
            if kk == k and mi != none_i:
                c.baseline = (k, none_i, gi, di, si)

    t_family = exp.teacher_family
    has_residual = bool(getattr(t_family, "steering_layers", None)) and getattr(t_family, "open_weights", True)

    def base(fam, seed: int, params: dict[str, Any]) -> Node:
        return plan.add("base", "op_base", family=fam.name, seed=seed, params=params)

    def view(kind: str) -> dict[str, int]:
        return {"view": k} if kind == "student" else {}  # a student index means something in its view only

    def evaluate(model: Node, kind: str, who: Any, model_base: Node | None = None) -> Node:
        return plan.add("evaluate", "op_evaluate", {"model": model, "model_base": model_base}, kind=kind, who=who,
                        **view(kind))

    def residual(model: Node, kind: str, who: Any, family, model_base: Node | None = None) -> Node | None:
        layers = getattr(family, "steering_layers", None)
        if not layers or not getattr(family, "open_weights", True):
            return None
        return plan.add("residual", "op_residual", {"model": model, "model_base": model_base}, kind=kind, who=who,
                        family=family.name, **view(kind))

    for r in exp.seeds:
        t_seed = exp.teacher_seed_for(r)
        b = base(t_family, t_seed, exp.teacher_params)
        b_eval = evaluate(b, "base", t_family.name)
        b_res = residual(b, "base", t_family.name, t_family)
        for mi, mit in enumerate(mits):
            point = _point(mit)
            teachers = []
            for gi, _g in enumerate(exp.grid):
                t = plan.add("inject", "op_inject", {"base": b}, family=t_family.name, grid=gi, seed=r)
                direction = {"dir_teacher": t, "dir_base": b}
                gen_dirs = direction if point == "activations" else {}
                c_gen = plan.add("generate", "op_generate", {"model": b, **gen_dirs}, kind="base", who=t_family.name,
                                 seed=r, mitigation=mi if point in ("decoding", "activations") else None)
                t_gen = plan.add("generate", "op_generate", {"model": t, "model_base": b, **gen_dirs}, kind="teacher",
                                 who=t_family.name, seed=r, mitigation=mi if point in ("decoding", "activations") else None)
                c_filt = plan.add("filter", "op_filter", {"raw": c_gen})
                t_filt = plan.add("filter", "op_filter", {"raw": t_gen})
                t_data, c_data = t_filt, c_filt
                if point == "data":
                    t_data = plan.add("mitigate", "op_mitigate", {"data": t_filt, "control": c_filt}, role="teacher",
                                      seed=r, mitigation=mi)
                    c_data = plan.add("mitigate", "op_mitigate", {"data": t_filt, "control": c_filt}, role="control",
                                      seed=r, mitigation=mi)
                t_budget = plan.add("budget", "op_budget", {"data": t_data, "control": c_data}, role="teacher", seed=r)
                c_budget = plan.add("budget", "op_budget", {"data": t_data, "control": c_data}, role="control", seed=r)
                kl = None
                if has_residual and exp.injector.component.open_weights:
                    kl = plan.add("teacher_kl", "op_teacher_kl", {"teacher": t, "teacher_base": b, "data": t_filt},
                                  family=t_family.name)
                t_eval = evaluate(t, "teacher", t_family.name, b)
                teachers.append({"inject": t, "base": b, "eval": t_eval, "filter": t_filt, "control_filter": c_filt,
                                 "mdata": t_data, "mcontrol": c_data, "data": t_budget, "control_data": c_budget,
                                 "kl": kl, "direction": direction,
                                 "residual": residual(t, "teacher", t_family.name, t_family, b)})
            first_student: dict[str, Node] = {}  # dataset node id -> the distill node that records soft labels
            for si, s in enumerate(exp.students):
                s_seed = s.resolve_seed(t_seed)
                sb = base(s.family, s_seed, s.params)
                for di, d in enumerate(exp.distillations):
                    comp = d.component
                    for gi, tch in enumerate(teachers):
                        hooked = point == "activations" and comp.needs_teacher_model
                        dirs = tch["direction"] if hooked else {}
                        fixed = comp.fixed_point_on_self and sb is b
                        if fixed:
                            control, c_model = None, sb
                        else:
                            control = plan.add("distill", "op_distill",
                                               {"student_base": sb, "data": tch["control_data"], "model": b, **dirs},
                                               student=si, distillation=di, seed=r, role="control", mitigation=mi,
                                               kind="base", who=t_family.name, view=k)
                            c_model = control
                        student = plan.add("distill", "op_distill",
                                           {"student_base": sb, "data": tch["data"], "model": tch["inject"],
                                            "model_base": b, **dirs},
                                           student=si, distillation=di, seed=r, role="student", mitigation=mi,
                                           kind="teacher", who=t_family.name, view=k)
                        for node, data in ((student, tch["data"]), (control, tch["control_data"])):
                            if node is None or not comp.needs_teacher_model:
                                continue
                            slot = f"{data.id}/{di}"
                            if slot in first_student and first_student[slot] is not node:
                                node.after.append(first_student[slot])
                            first_student.setdefault(slot, node)
                        c_kind, c_who = ("base", s.family.name) if fixed else ("student", si)
                        c_eval = evaluate(c_model, c_kind, c_who)
                        s_eval = evaluate(student, "student", si)
                        nodes = {
                            "teacher_base": b, "student_base": sb, "inject": tch["inject"],
                            "eval_base": b_eval, "eval_teacher": tch["eval"], "eval_control": c_eval, "eval_student": s_eval,
                            "teacher_filter": tch["filter"], "control_filter": tch["control_filter"],
                            "mdata": tch["mdata"], "mcontrol": tch["mcontrol"],
                            "data": tch["data"], "control_data": tch["control_data"],
                            "student": student, "control": control, "teacher_kl": tch["kl"],
                            "res_base": b_res, "res_teacher": tch["residual"],
                            "res_control": residual(c_model, c_kind, c_who, s.family),
                            "res_student": residual(student, "student", si, s.family),
                        }
                        plan.cells[(k, mi, gi, di, si)].replicates.append(
                            ReplicatePlan(r, t_seed, s_seed, nodes, fixed_point_control=fixed))


# -- labels of cells (a grid's settings, distillations, mitigations) ------------------------
def grid_labels(grid: list[dict[str, Any]]) -> list[str]:
    if len(grid) <= 1:
        return [""]
    varying = [k for k in grid[0] if len({json.dumps(g.get(k), sort_keys=True) for g in grid}) > 1]
    return [",".join(f"{k}={g[k]}" for k in varying) for g in grid]


def distillation_labels(dists: list[Spec]) -> list[str]:
    return [d.label or _spec_label(d, dists) for d in dists]


def _spec_label(spec: Spec, specs: list) -> str:
    """The component's name, with the params that differ when the same name is listed twice."""
    same = [o for o in specs if o is not None and o.name == spec.name]
    if len(same) == 1:
        return spec.name
    varying = [k for k in spec.params if len({json.dumps(o.params.get(k), sort_keys=True) for o in same}) > 1]
    return f"{spec.name}[{','.join(f'{k}={spec.params[k]}' for k in varying)}]"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,\[\]+-]+", "_", text).strip("_")


def mitigation_labels(mits: list) -> list[str]:
    """'none', the name, or the name and its differing params when a name appears twice."""
    return ["none" if m is None else _spec_label(m, mits) for m in mits]
