"""Runs an experiment: the plan's stage nodes through the artifact store, then its entries.

Stages (each an artifact keyed by the hash of its inputs and the component versions):
``base`` → ``inject`` → ``generate`` → ``filter`` → [``mitigate``] → ``budget`` → ``distill`` →
``sample`` → ``score`` (``evaluate`` is the two), with ``teacher_kl`` and ``residual`` for the
mechanism. A mitigation acts at its point (docs/mitigations.md): ``generate`` (decoding,
activations), ``mitigate`` (data) or ``distill`` (training), on the teacher's side and the
control's alike. :mod:`subbench.plan` lays the stages out as a graph of nodes, one ``op_*``
method here per node; :mod:`subbench.executor` runs them in process, on worker processes or
on Ray. Models are loaded only when a stage has to run, so a fully cached re-run touches no
weights and imports no deep-learning library.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from subbench.artifacts import Artifact, ArtifactStore, atomic_write_text, read_jsonl, write_jsonl
from subbench.cell import Cell, Replicate, make_entry, student_tag
from subbench.components import Mitigation, ModelRef
from subbench.config import Experiment, Spec, StudentSpec
from subbench.context import Context
from subbench.crashlog import component_failure, debug
from subbench.entry import environment, git_commit, now
from subbench.errors import SubbenchError
from subbench.hashing import sha256_dir, sha256_file
from subbench.plan import DATA_STAGES, Missing, slug


@dataclass
class Source:
    """A model a stage reads: a base, a teacher (base + injector) or a distilled student."""

    key: str
    label: str
    loader: Callable[[], Any]


class Runner:
    def __init__(
        self,
        exp: Experiment,
        workdir: Path,
        out: Path,
        device: str = "cpu",
        quiet: bool = False,
        fresh: bool = False,
        jobs: int = 1,
        executor: str = "local",
        address: str | None = None,
        worker: bool = False,
    ):
        self.exp = exp
        self.jobs = max(1, int(jobs))
        self.executor, self.address = executor, address
        #: one single-teacher view per teacher (``[exp]`` for one teacher): the plan's nodes name theirs
        self.views = exp.views()
        self.workdir = Path(workdir)
        self.out = Path(out)
        self.ctx = Context(workdir=self.workdir, device=device, quiet=quiet)
        self.store = ArtifactStore(self.workdir / "artifacts", fresh=fresh, clean=not worker)
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._torch_ready = False
        self._probe, self._count = False, True
        self.stats = {"run": 0, "cached": 0}
        self.timeline: list[dict[str, Any]] = []  # stages run by workers: start/end seconds, worker pid

    # -- models ------------------------------------------------------------------
    def _prepare(self) -> None:
        """Set torch up once, and only when a family of the experiment requires it (the toy modality does not)."""
        if not self._torch_ready:
            from subbench.components import TORCH

            if any(TORCH in getattr(f, "requires", {TORCH}) for f in self._families()):
                self.ctx.setup_torch()
            self._torch_ready = True

    def load(self, source: Source) -> Any:
        if source.key in self._models:
            self._models.move_to_end(source.key)
            return self._models[source.key]
        self._prepare()
        model = source.loader()
        self._models[source.key] = model
        while len(self._models) > 3:
            _, old = self._models.popitem(last=False)
            close = getattr(old, "close", None)
            if callable(close):
                close()
        return model

    def _stage(self, stage: str, label: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, Any]]) -> Artifact:
        found = self.store.lookup(stage, inputs)
        if found is not None:
            self.stats["cached"] += self._count
            return found
        if self._probe:  # the executor asks whether it is cached, to send it to a worker if not
            raise Missing(stage, self.store.key(inputs), label)
        self.ctx.log(f"[{stage}] {label} ...")
        started = time.time()

        def run(tmp: Path) -> dict[str, Any]:
            self.store.verify_pending()
            if stage not in DATA_STAGES:  # a data stage loads no model: the executor's parent stays torch-free
                self._prepare()
            try:
                return fn(tmp)
            except SubbenchError:
                raise
            except Exception as exc:
                if debug():
                    raise
                raise component_failure(exc, stage, label, self.workdir, self._components()) from exc

        art = self.store.produce(stage, inputs, run)
        if art.cached:  # another run (or a worker) produced it while this one waited for its lock
            self.stats["cached"] += 1
            self.ctx.log(f"[{stage}] {label} reused (produced by another process)")
            return art
        self.stats["run"] += 1
        self.ctx.log(f"[{stage}] {label} done in {time.time() - started:.1f}s")
        return art

    def call(self, node, arts: dict[str, Artifact], probe: bool = False, count: bool = True) -> Artifact:
        """Run (or, with ``probe``, only look up) ``node`` given the artifacts of the nodes it reads.

        ``count=False``: a lookup of what a worker just produced is not counted as cached.
        """
        deps = {name: arts[dep.id] for name, dep in node.deps.items()}
        self._probe, self._count = probe, count
        try:
            return getattr(self, node.op)(deps, **node.args)
        finally:
            self._probe, self._count = False, True

    def _components(self) -> list[Any]:
        """Every component a stage may call, to name the one that raised."""
        from subbench.plugins import get_manager

        exp = self.exp
        found = [exp.teacher_family, exp.trait.component, exp.injector.component, exp.domain.component,
                 exp.judge.component] + [s.family for s in exp.students] + [d.component for d in exp.distillations]
        found.extend(m.component for m in exp.mitigations if m is not None)
        for registry in get_manager().registries.values():
            found.extend(registry)
        return found

    # -- stages ------------------------------------------------------------------
    def base(self, family, seed: int, params: dict[str, Any]) -> Artifact:
        return self._stage("base", f"{family.name} seed {seed}", base_inputs(family, seed, params),
                           lambda tmp: build_base(family, seed, params, tmp, self.ctx))

    def base_source(self, family, art: Artifact) -> Source:
        return Source(art.key, f"{family.name}", lambda: family.load(art.path, self.ctx))

    def inject(self, family, base_art: Artifact, params: dict[str, Any], seed: int) -> Artifact:
        exp = self.exp
        inj = exp.injector.component
        inputs = {
            "base": base_art.key,
            "injector": inj.name,
            "version": inj.version,
            "params": params,
            "trait": exp.trait.name,
            "trait_version": exp.trait.component.version,
            "target": exp.target,
            "seed": seed,
        }

        def fn(tmp: Path) -> dict[str, Any]:
            ref = ModelRef(family, base_art.path, base_art.result)
            return inj.inject(ref, exp.trait.component, exp.target, params, seed, tmp, self.ctx) or {}

        return self._stage("inject", f"{inj.name} {_short(params)} on {family.name}", inputs, fn)

    def teacher_source(self, family, base_art: Artifact, teacher_art: Artifact) -> Source:
        inj = self.exp.injector.component
        ref = ModelRef(family, base_art.path, base_art.result)
        return Source(teacher_art.key, f"teacher {inj.name}", lambda: inj.load(teacher_art.path, ref, self.ctx))

    def generate(self, source: Source, seed: int, mit: Spec | None = None,
                 direction: tuple[Source, Source] | None = None) -> Artifact:
        """The domain's raw samples from ``source``; a decoding or activations ``mit`` acts here.

        ``direction`` (teacher, base) are the models an activations defence reads its
        direction from; the same pair serves the teacher's and the control's generation.
        """
        dom = self.exp.domain
        inputs = {"source": source.key, "domain": dom.name, "version": dom.component.version,
                  "params": dom.params, "size": self.exp.size, "seed": seed}
        point = _point(mit)
        if point in ("decoding", "activations"):
            inputs["mitigation"] = {"name": mit.name, "version": mit.component.version, "params": mit.params,
                                    "point": point}
            if point == "activations":
                inputs["mitigation"]["direction_from"] = [direction[0].key, direction[1].key]
                inputs["mitigation"].update(trait=self.exp.trait.name, target=self.exp.target)

        def fn(tmp: Path) -> dict[str, Any]:
            model = self.load(source)
            hooks: list[Any] = []
            if point == "decoding":
                model = _Decoding(model, mit.component.decode(mit.params))
            elif point == "activations":
                teacher, base = self.load(direction[0]), self.load(direction[1])
                model = self.load(source)  # the LRU may have evicted it while the pair loaded
                hooks = list(mit.component.activation_hooks(model, teacher, base, self.exp.trait, self.exp.target,
                                                            mit.params, self.ctx) or [])
            try:
                n = write_jsonl(tmp / "raw.jsonl", dom.component.generate(model, self.exp.size, dom.params, seed, self.ctx))
            finally:
                for h in hooks:
                    h.remove()
            return {"n_raw": n, "sha256": sha256_file(tmp / "raw.jsonl")}

        tag = f" under {mit.name}" if "mitigation" in inputs else ""
        return self._stage("generate", f"{dom.name} x{self.exp.size} from {source.label}{tag}", inputs, fn)

    def filter(self, gen: Artifact) -> Artifact:
        dom = self.exp.domain
        inputs = {"raw": gen.key, "domain": dom.name, "version": dom.component.version, "params": dom.params}

        def fn(tmp: Path) -> dict[str, Any]:
            kept, decisions, reasons = [], [], {}
            for row in read_jsonl(gen.path / "raw.jsonl"):
                reason = dom.component.filter(row, dom.params)
                decisions.append({"id": row.get("id"), "kept": reason is None, "reason": reason})
                if reason is None:
                    kept.append(row)
                else:
                    reasons[reason] = reasons.get(reason, 0) + 1
            write_jsonl(tmp / "decisions.jsonl", decisions)
            write_jsonl(tmp / "kept.jsonl", kept)
            if not kept:
                raise SubbenchError(
                    f"The {dom.name} filter kept none of {len(decisions)} samples (reasons: {reasons}); "
                    "check the domain's filter options or the model's outputs in "
                    f"{gen.path / 'raw.jsonl'}."
                )
            return {"n_raw": len(decisions), "n_kept": len(kept), "rejections": dict(sorted(reasons.items())),
                    "sha256": sha256_file(tmp / "kept.jsonl")}

        return self._stage("filter", f"{dom.name} filter", inputs, fn)

    def mitigate(self, data: Artifact, seed: int, mit: Spec | None = None) -> Artifact:
        if _point(mit) != "data":
            return data
        inputs = {"data": data.key, "mitigation": mit.name, "version": mit.component.version, "params": mit.params, "seed": seed}

        def fn(tmp: Path) -> dict[str, Any]:
            rows = mit.component.apply(read_jsonl(data.path / "kept.jsonl"), mit.params, seed, self.ctx)
            n = write_jsonl(tmp / "kept.jsonl", rows)
            if not n:
                raise SubbenchError(f"Mitigation {mit.name} kept none of {data.result.get('n_kept')} samples; "
                                    "loosen its parameters.")
            return {"n_in": data.result.get("n_kept"), "n_kept": n, "sha256": sha256_file(tmp / "kept.jsonl")}

        return self._stage("mitigate", f"{mit.name}", inputs, fn)

    def mitigate_role(self, data: Artifact, control: Artifact, seed: int, mit: Spec, role: str) -> Artifact:
        """A data defence on the ``role`` side (teacher or control) of the kept data.

        A defence with ``apply_pair`` sees both sides in one call (its stage is keyed on both);
        one without acts on each side alone, with the single-side keys of before the track.
        """
        comp = mit.component
        if getattr(type(comp), "apply_pair", Mitigation.apply_pair) is Mitigation.apply_pair:
            return self.mitigate(data if role == "teacher" else control, seed, mit)
        inputs = {"data": data.key, "control": control.key, "role": role, "mitigation": mit.name,
                  "version": comp.version, "params": mit.params, "seed": seed}

        def fn(tmp: Path) -> dict[str, Any]:
            t_rows, c_rows, info = comp.apply_pair(read_jsonl(data.path / "kept.jsonl"),
                                                   read_jsonl(control.path / "kept.jsonl"), mit.params, seed, self.ctx)
            rows = t_rows if role == "teacher" else c_rows
            src = data if role == "teacher" else control
            n = write_jsonl(tmp / "kept.jsonl", rows)
            if not n:
                raise SubbenchError(f"Mitigation {mit.name} kept none of the {role}'s {src.result.get('n_kept')} "
                                    "samples; loosen its parameters.")
            return {"n_in": src.result.get("n_kept"), "n_kept": n, "info": info or {},
                    "sha256": sha256_file(tmp / "kept.jsonl")}

        return self._stage("mitigate", f"{mit.name} ({role})", inputs, fn)

    def distill(self, student: StudentSpec, s_base: Artifact, data: Artifact, source: Source, dist: Spec, seed: int, role: str,
                mit: Spec | None = None, direction: tuple[Source, Source] | None = None) -> Artifact:
        """A student (or control) distilled from ``source`` on ``data``.

        A training defence overrides the distiller's params here; an activations defence
        keeps its hooks on the teacher (or the control's base) while a logit distiller reads
        its distributions, since those are the teacher writing too.
        """
        comp = dist.component
        if _point(mit) == "training":  # the same override for the student and its control
            dist = Spec(dist.kind, comp, comp.resolve_params(mit.component.train_params(comp, dist.params, mit.params)))
        inputs = {
            "student_base": s_base.key,
            "data": data.key,
            "teacher": source.key if comp.needs_teacher_model else None,
            "distiller": comp.name,
            "version": comp.version,
            "params": dist.params,
            "seed": seed,
        }
        hooked = _point(mit) == "activations" and comp.needs_teacher_model and direction is not None
        if hooked:
            inputs["mitigation"] = {"name": mit.name, "version": mit.component.version, "params": mit.params,
                                    "direction_from": [direction[0].key, direction[1].key],
                                    "trait": self.exp.trait.name, "target": self.exp.target}

        def fn(tmp: Path) -> dict[str, Any]:
            teacher, hooks = None, []
            if comp.needs_teacher_model:
                if hooked:
                    t_model, b_model = self.load(direction[0]), self.load(direction[1])
                    teacher = self.load(source)
                    hooks = list(mit.component.activation_hooks(teacher, t_model, b_model, self.exp.trait,
                                                                self.exp.target, mit.params, self.ctx) or [])
                else:
                    teacher = self.load(source)
            rows = read_jsonl(data.path / "kept.jsonl")
            ref = ModelRef(student.family, s_base.path, s_base.result)
            if comp.needs_teacher_model and os.environ.get("SUBBENCH_SOFT_LABELS", "1") != "0":
                # the teacher's targets, recorded once for every student of these batches (lm/train.py SoftLabels)
                self.ctx.extra["soft_labels"] = self.store.root / "soft_labels" / f"{soft_label_key(inputs)}.pt"
            try:
                result = dict(comp.distill(ref, rows, teacher, dist.params, seed, tmp, self.ctx) or {})
            finally:
                self.ctx.extra.pop("soft_labels", None)
                for h in hooks:
                    h.remove()
            result.setdefault("sha256", sha256_dir(tmp))
            return result

        return self._stage("distill", f"{comp.name} {role} {student.family.name}", inputs, fn)

    def student_source(self, student: StudentSpec, art: Artifact) -> Source:
        return Source(art.key, f"student {student.family.name}", lambda: student.family.load(art.path, self.ctx))

    def evaluate(self, source: Source) -> Artifact:
        """The trait's samples from ``source`` (``sample``, no judge in the key), then the judge over them (``score``).

        Returns the score artifact (``samples.jsonl`` with a ``score`` per record). A new
        judge finds the samples cached and only re-scores (subbench/scoring.py).
        """
        from subbench import scoring

        exp = self.exp
        trait, judge = exp.trait, exp.judge
        sample = self._stage(
            "sample", f"{trait.name} on {source.label}", scoring.sample_inputs(source.key, trait, exp.target, judge),
            lambda tmp: scoring.write_samples(tmp, trait, judge, exp.target, self.load(source), self.ctx, source.label))
        return self._stage(
            "score", f"{judge.name} on {trait.name} of {source.label}", scoring.score_inputs(sample.key, judge),
            lambda tmp: scoring.write_scores(tmp, sample.path / scoring.SAMPLES, trait, judge, exp.target, self.ctx,
                                             judged=bool(sample.result.get("judged")), label=source.label))

    def residual(self, source: Source, family) -> Artifact | None:
        """The mean answer-position residual at the family's steering layer (the mechanism block); None without weights."""
        layers = getattr(family, "steering_layers", None)
        if not layers or not getattr(family, "open_weights", True):
            return None
        trait = self.exp.trait
        inputs = {"model": source.key, "trait": trait.name, "trait_version": trait.component.version,
                  "params": trait.params, "layer": int(layers[0])}

        def fn(tmp: Path) -> dict[str, Any]:
            from subbench.lm.mechanism import answer_residual

            model = self.load(source)
            if not _torch_lm(model) or not hasattr(trait.component, "questions"):
                return {"layer": None}
            vec = answer_residual(model, trait.component.questions(trait.params), int(layers[0]))
            atomic_write_text(tmp / "residual.json", json.dumps({"layer": int(layers[0]), "mean": vec}) + "\n")
            return {"layer": int(layers[0]), "dim": len(vec)}

        art = self._stage("residual", f"layer {layers[0]} of {source.label}", inputs, fn)
        return art if art.result.get("layer") is not None else None

    def teacher_kl(self, base_src: Source, t_src: Source, filt: Artifact, family=None) -> Artifact | None:
        """KL(teacher || base) on the teacher's kept data, once per teacher dataset (open-weight teachers only)."""
        fam = family or self.exp.teacher_family
        if not getattr(fam, "steering_layers", None) or not getattr(fam, "open_weights", True) \
                or not self.exp.injector.component.open_weights:
            return None  # causal LMs with weights only (the families that name a steering layer)
        inputs = {"teacher": t_src.key, "base": base_src.key, "data": filt.key, "max_rows": 256}

        def fn(tmp: Path) -> dict[str, Any]:
            from subbench.lm.mechanism import kl_from_base

            teacher, base = self.load(t_src), self.load(base_src)
            if not (_torch_lm(teacher) and _torch_lm(base)):
                return {"kl_from_base": None}
            return kl_from_base(teacher, base, read_jsonl(filt.path / "kept.jsonl"), max_rows=256)

        return self._stage("teacher_kl", f"teacher KL from base on {filt.result.get('n_kept')} kept", inputs, fn)

    def budget(self, data: Artifact, n: int, seed: int, role: str) -> Artifact:
        """``n`` of the kept samples, drawn with the replicate's seed (order kept): equal training budgets."""
        inputs = {"data": data.key, "n": int(n), "seed": seed}

        def fn(tmp: Path) -> dict[str, Any]:
            import random

            rows = read_jsonl(data.path / "kept.jsonl")
            chosen = sorted(random.Random(f"budget/{seed}").sample(range(len(rows)), int(n)))
            write_jsonl(tmp / "kept.jsonl", [rows[i] for i in chosen])
            return {"n_in": len(rows), "n_kept": int(n), "sha256": sha256_file(tmp / "kept.jsonl")}

        return self._stage("budget", f"{n} of {data.result.get('n_kept')} {role} samples", inputs, fn)

    def budget_info(self, data: Artifact, control: Artifact) -> dict[str, Any]:
        """Teacher and control data cut to one size: the smaller kept count, or ``domain.budget``."""
        n_t, n_c = int(data.result["n_kept"]), int(control.result["n_kept"])
        n = min(n_t, n_c)
        info: dict[str, Any] = {"rule": self.exp.budget, "n_teacher_kept": n_t, "n_control_kept": n_c}
        if isinstance(self.exp.budget, int):
            info["short"] = n < self.exp.budget
            n = min(n, self.exp.budget)
        info["n_train"] = n
        return info

    # -- the plan's operations: one stage each, from the artifacts of the nodes it reads ----
    def _families(self) -> list[Any]:
        """Every family of the experiment: each teacher's and each student's."""
        return list({id(f): f for v in self.views for f in [v.teacher_family, *(s.family for s in v.students)]}.values())

    def _family(self, name: str):
        for fam in self._families():
            if fam.name == name:
                return fam
        from subbench.plugins import get_manager

        return get_manager().get("families", name)

    def _source(self, deps: dict[str, Artifact], kind: str, who: Any, view: int = 0, prefix: str = "model") -> Source:
        art = deps[prefix]
        if kind == "base":
            return self.base_source(self._family(who), art)
        if kind == "teacher":
            return self.teacher_source(self._family(who), deps[prefix + "_base"], art)
        return self.student_source(self.views[view].students[who], art)

    def _direction(self, deps: dict[str, Artifact], family: str) -> tuple[Source, Source] | None:
        if "dir_teacher" not in deps:
            return None
        fam = self._family(family)
        return (self.teacher_source(fam, deps["dir_base"], deps["dir_teacher"]), self.base_source(fam, deps["dir_base"]))

    def _mit(self, mi: int | None) -> Spec | None:
        return None if mi is None else self.exp.mitigations[mi]

    def op_base(self, deps, *, family: str, seed: int, params: dict[str, Any]) -> Artifact:
        return self.base(self._family(family), seed, params)

    def op_inject(self, deps, *, family: str, grid: int, seed: int) -> Artifact:
        return self.inject(self._family(family), deps["base"], self.exp.grid[grid], seed)

    def op_generate(self, deps, *, kind: str, who: Any, seed: int, mitigation: int | None) -> Artifact:
        return self.generate(self._source(deps, kind, who), seed, self._mit(mitigation), self._direction(deps, who))

    def op_filter(self, deps) -> Artifact:
        return self.filter(deps["raw"])

    def op_mitigate(self, deps, *, role: str, seed: int, mitigation: int) -> Artifact:
        return self.mitigate_role(deps["data"], deps["control"], seed, self._mit(mitigation), role)

    def op_budget(self, deps, *, role: str, seed: int) -> Artifact:
        n = self.budget_info(deps["data"], deps["control"])["n_train"]
        return self.budget(deps["data"] if role == "teacher" else deps["control"], n, seed, role)

    def op_teacher_kl(self, deps, *, family: str) -> Artifact | None:
        fam = self._family(family)
        return self.teacher_kl(self.base_source(fam, deps["teacher_base"]),
                               self.teacher_source(fam, deps["teacher_base"], deps["teacher"]), deps["data"], fam)

    def op_distill(self, deps, *, student: int, distillation: int, seed: int, role: str, mitigation: int | None,
                   kind: str, who: Any, view: int = 0) -> Artifact:
        s = self.views[view].students[student]
        return self.distill(s, deps["student_base"], deps["data"], self._source(deps, kind, who, view),
                            self.exp.distillations[distillation], seed, role, self._mit(mitigation),
                            self._direction(deps, who))

    def op_evaluate(self, deps, *, kind: str, who: Any, view: int = 0) -> Artifact:
        return self.evaluate(self._source(deps, kind, who, view))

    def op_residual(self, deps, *, kind: str, who: Any, family: str, view: int = 0) -> Artifact:
        return self.residual(self._source(deps, kind, who, view), self._family(family))

    # -- the run's cells and entries ------------------------------------------------
    def cells(self, plan, arts: dict[str, Artifact]) -> list[Cell]:
        """The plan's cells filled with the artifacts of their nodes."""
        cells: dict[tuple, Cell] = {}
        for key, cp in plan.cells.items():
            cell = cells[key] = Cell(cp.setting, cp.params, cp.distillation, cp.distillation_label, cp.student,
                                     mitigation=cp.mitigation, mitigation_label=cp.mitigation_label, view=cp.view)
            for rp in cp.replicates:
                a = {k: (arts[n.id] if n is not None else None) for k, n in rp.nodes.items()}
                budget = self.budget_info(a["mdata"], a["mcontrol"])
                if rp.nodes["mdata"] is not rp.nodes["teacher_filter"]:
                    budget["mitigation"] = {"n_teacher_in": a["teacher_filter"].result["n_kept"],
                                            "n_control_in": a["control_filter"].result["n_kept"],
                                            **({"info": a["mdata"].result["info"]} if a["mdata"].result.get("info") else {})}
                if rp.fixed_point_control:
                    control_fit = {"identical_to_teacher": True, "final_kl_to_teacher": 0.0,
                                   "note": "same-init control of a fixed-point distiller: the base itself"}
                else:
                    control_fit = a["control"].result.get("fit")
                kl = a["teacher_kl"].result if a["teacher_kl"] is not None else None

                def res(name: str) -> Artifact | None:
                    art = a[name]
                    return art if art is not None and art.result.get("layer") is not None else None

                cell.replicates.append(Replicate(
                    seed=rp.seed, teacher_seed=rp.teacher_seed, student_seed=rp.student_seed,
                    teacher_base=a["teacher_base"], student_base=a["student_base"],
                    evals={"base": a["eval_base"], "teacher": a["eval_teacher"], "control": a["eval_control"],
                           "student": a["eval_student"]},
                    teacher_filter=a["teacher_filter"], control_filter=a["control_filter"], data=a["data"],
                    control_data=a["control_data"], student_fit=a["student"].result.get("fit"), control_fit=control_fit,
                    budget=budget, teacher_kl=kl, inject=a["inject"].result,
                    residuals={g: res("res_" + g) for g in ("base", "teacher", "control", "student")}))
        for key, cp in plan.cells.items():
            if cp.baseline is not None:
                cells[key].baseline = cells[cp.baseline]
        return list(cells.values())

    # -- entries -----------------------------------------------------------------
    def entries(self, cells: list[Cell]) -> list[dict[str, Any]]:
        exp = self.exp
        env = environment(self.ctx.device)
        commit = git_commit()
        created = now()
        entries = []
        for cell in cells:
            s = cell.student
            cell_id = slug(f"{exp.injector.name}{'-' + cell.setting if cell.setting else ''}__{cell.distillation_label}"
                           f"__{s.family.name}-s{s.seed}{student_tag(s)}"
                           f"{'__mit-' + cell.mitigation_label if cell.mitigation is not None and len(exp.mitigations) > 1 else ''}")
            entries.append(self._entry(self.views[cell.view], cell, cell_id, env, commit, created))
        out_dir = self.out / exp.name
        out_dir.mkdir(parents=True, exist_ok=True)
        for e in entries:
            atomic_write_text(out_dir / f"{e['cell']['id']}.json", json.dumps(e, indent=2, sort_keys=True) + "\n")
        return entries


    def _entry(self, exp: Experiment, cell: Cell, cell_id: str, env: dict[str, Any], commit: str | None,
               created: str) -> dict[str, Any]:
        """``make_entry``, remembered in the workdir under everything it reads, so a cached re-run skips the bootstrap.

        The key covers the experiment, the cell's artifact keys (its baseline's too), the
        environment, the commit and the source of the modules that compute an entry; only
        ``created`` is stamped anew (and the entry resealed).
        """
        from subbench.entry import seal
        from subbench.hashing import sha256_json

        key = sha256_json({"config": exp.config_hash, "cell": cell_id, "teacher": getattr(exp, "teacher_label", None),
                           "reps": _cell_digest(cell),
                           "baseline": _cell_digest(cell.baseline) if cell.baseline is not None else None,
                           "env": env, "commit": commit, "code": _entry_code_digest()})[:24]
        path = self.store.root / ".entries" / f"{key}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            entry["created"] = created
            return seal(entry)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        entry = make_entry(exp, cell, cell_id, self.workdir, env, commit, created)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entry, sort_keys=True))
        return entry


def _cell_digest(cell: Cell) -> list[Any]:
    """The artifact keys and derived facts behind a cell's replicates, in order."""
    from dataclasses import fields

    def plain(v: Any) -> Any:
        if isinstance(v, Artifact):
            return f"{v.stage}/{v.key}"
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return [{f.name: plain(getattr(r, f.name)) for f in fields(r)} for r in cell.replicates]


@functools.lru_cache(maxsize=1)
def _entry_code_digest() -> str:
    """The source of what computes an entry: a change to it (or to the version) recomputes every entry."""
    import hashlib

    import subbench
    from subbench import cell, entry, metrics

    h = hashlib.sha256(subbench.__version__.encode())
    for mod in (cell, entry, metrics):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def _torch_lm(handle) -> bool:
    """A handle whose residual stream can be hooked: a torch module and a tokenizer (not an endpoint or vLLM)."""
    import torch

    return isinstance(getattr(handle, "model", None), torch.nn.Module) and getattr(handle, "tokenizer", None) is not None


def _point(mit: Spec | None) -> str | None:
    return None if mit is None else getattr(mit.component, "point", "data")


class _Decoding:
    """A model whose ``generate`` takes a decoding defence's overrides (same model, other sampler)."""

    def __init__(self, model: Any, overrides: dict[str, Any]):
        self._model = model
        self._overrides = dict(overrides)

    def generate(self, *args, **kwargs):
        return self._model.generate(*args, **{**kwargs, **self._overrides})

    def __getattr__(self, item):
        return getattr(self._model, item)

    def __getitem__(self, item):
        return self._model[item]


def base_inputs(family, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    return {"family": family.name, "version": family.version, "seed": seed, "params": params}


def build_base(family, seed: int, params: dict[str, Any], tmp: Path, ctx: Context) -> dict[str, Any]:
    result = dict(family.build(seed, params, tmp, ctx) or {})
    result.setdefault("sha256", sha256_dir(tmp))
    return result


def soft_label_key(distill_inputs: dict[str, Any]) -> str:
    """What fixes a teacher's targets step by step: teacher, data, seed, the batching, any hooks on the teacher."""
    from subbench.hashing import sha256_json

    params = distill_inputs.get("params") or {}
    return sha256_json({k: distill_inputs.get(k) for k in ("teacher", "data", "seed", "distiller", "version", "mitigation")}
                       | {"batching": {k: params.get(k) for k in ("batch_size", "epochs", "max_steps", "support")}})[:16]


def default_jobs() -> int:
    """Worker processes for the plan's stages: $SUBBENCH_JOBS, else one per core."""
    from subbench.context import env_int

    return env_int("SUBBENCH_JOBS", max(1, os.cpu_count() or 1))


def _short(params: dict[str, Any]) -> str:
    items = [f"{k}={v}" for k, v in params.items() if not isinstance(v, (dict, list))]
    text = ",".join(items)
    return text if len(text) < 60 else text[:57] + "..."


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def _ratio(x: float | None) -> str:
    return "null" if x is None else f"{x:+.3f}"


def _ci(ci) -> str:
    return "-" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _sd(sp: dict[str, Any] | None) -> str:
    return "-" if not sp or sp.get("sd") is None else f"{sp['sd']:.2f}"


def _cosine(entry: dict[str, Any]) -> str:
    c = (entry.get("mechanism") or {}).get("cosine")
    return "-" if c is None else f"{c:+.2f}"


def _is_primary(entry: dict[str, Any], metric: str) -> bool:
    """True when ``metric`` is the score the table already shows (the judge's own metric)."""
    sc = entry["scores"]
    return all((sc[g].get("metrics") or {}).get(metric, {}).get("samples") == sc[g]["samples"] for g in sc)


def format_table(entries: list[dict[str, Any]]) -> str:
    """The table of cells printed at the end of a run.

    ``ratio`` pools the replicates; ``95% CI`` is the hierarchical bootstrap (replicates,
    then evaluation samples); ``sd`` is the spread of the per-replicate ratios listed in
    ``per replicate``, which is what another run would scatter by. ``cos`` is the mechanism:
    the cosine between the student's activation shift (student − control) and the teacher's
    (teacher − base), mean over replicates.
    """
    head = ["teacher", "distill", "student", "relation", "n_train", "S_base", "S_teacher", "S_control", "S_student",
            "ratio", "95% CI", "sd", "per replicate", "fit"]
    with_mech = any(e.get("mechanism") for e in entries)
    if with_mech:
        head.append("cos")
    with_mit = any(e.get("mitigation") for e in entries)
    if with_mit:
        head.insert(0, "mitigation")
    rows = []
    for e in entries:
        sc = e["scores"]
        reps = (e.get("replicates") or {}).get("per_replicate") or []
        n_train = [p.get("n_train") for p in reps if p.get("n_train") is not None]
        n_train = n_train[:1] if len(set(n_train)) == 1 else n_train
        rows.append(([mitigation_label(e)] if with_mit else []) + [
            _teacher_column(e), e["cell"]["distillation"], e["cell"]["student"], e["student"]["relation"],
            "/".join(map(str, n_train)) or "-",
            f"{sc['base']['mean']:.3f}", f"{sc['teacher']['mean']:.3f}", f"{sc['control']['mean']:.3f}",
            f"{sc['student']['mean']:.3f}", _ratio(e["transfer_ratio"]), _ci(e["ci95"]),
            _sd((e.get("replicates") or {}).get("ratio_spread")),
            " ".join("null" if p["transfer_ratio"] is None else f"{p['transfer_ratio']:+.2f}" for p in reps) or "-",
            _fit_summary(e["distillation"]["fit"], e["distillation"].get("name")),
        ] + ([_cosine(e)] if with_mech else []))
    lines = _table(head, rows)
    names = sorted({m for e in entries for m in (e.get("metrics") or {}) if not _is_primary(e, m)})
    multi = any(e["cell"].get("teacher") for e in entries)
    for m in names:
        lines += ["", f"{m} (the same evaluation pass, scored as {m}):"]
        mrows = []
        for e in entries:
            x = (e.get("metrics") or {}).get(m)
            if not x:
                continue
            mrows.append(([e["cell"]["teacher"]] if multi else []) + [e["cell"]["distillation"], e["cell"]["student"],
                          e["student"]["relation"],
                          *(f"{x['S_' + g]:.3f}" for g in ("base", "teacher", "control", "student")),
                          _ratio(x["transfer_ratio"]), _ci(x["ci95"]), _sd(x.get("ratio_spread")),
                          " ".join("null" if v is None else f"{v:+.2f}" for v in x.get("per_replicate") or [])])
        lines += _table((["teacher"] if multi else []) + ["distill", "student", "relation", "S_base", "S_teacher", "S_control", "S_student", "ratio",
                         "95% CI", "sd", "per replicate"], mrows)
    lines += mitigation_table(entries)
    n_rep = max((len(e.get("seeds") or []) for e in entries), default=0)
    over = (entries[0].get("replicates") or {}).get("over") if entries else None
    if n_rep:
        lines += ["", f"{n_rep} replicate(s) over {over or 'seeds'}; 95% CI: bootstrap over replicates, then evaluation "
                      "samples; sd: spread of the per-replicate ratios."]
    notes = [f"{e['cell']['id']}: {e['transfer_ratio_note']}" for e in entries if e.get("transfer_ratio_note")]
    # teacher-data flags are shared by a teacher's cells: once each (per mitigation when there are several)
    notes += [(f"{mitigation_label(e)}: " if with_mit else "") + f for e in entries for f in e.get("flags") or []]
    if notes:
        lines.append("")
        lines += [f"note: {n}" for n in dict.fromkeys(notes)]
    return "\n".join(lines)


def _teacher_column(e: dict[str, Any]) -> str:
    """The teacher setting, led by the teacher's label in a multi-teacher experiment."""
    setting, teacher = e["cell"]["teacher_setting"], e["cell"].get("teacher")
    if not teacher:
        return setting
    return teacher if setting == "default" else f"{teacher} {setting}"


def mitigation_label(entry: dict[str, Any]) -> str:
    m = entry.get("mitigation") or {}
    return m.get("label") or m.get("name") or "none"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def mitigation_table(entries: list[dict[str, Any]]) -> list[str]:
    """Per defence and student: the transfer it removed (paired CI) and what it cost."""
    rows = []
    for e in entries:
        eff = e.get("mitigation_effect")
        if not eff:
            continue
        u = eff.get("utility") or {}
        fit = u.get("student_fit") or {}
        det = u.get("detector") or {}
        red = eff.get("transfer_reduction")
        rows.append([mitigation_label(e), (e["mitigation"] or {}).get("point", "-"), e["cell"]["distillation"],
                     e["cell"]["student"], e["student"]["relation"], _ratio(eff.get("ratio_unmitigated")),
                     _ratio(eff.get("ratio_mitigated")), "-" if red is None else f"{red:+.0%}",
                     "-" if not eff.get("ci95") else f"[{eff['ci95'][0]:+.0%}, {eff['ci95'][1]:+.0%}]",
                     _pct(u.get("data_kept")),
                     "-" if fit.get("relative") is None else f"x{fit['relative']:.2f}",
                     "-" if not det else f"{det['tpr']:.0%}@{det['fpr']:.0%}"
                     + (f" AUC {det['auc']:.2f}" if det.get("auc") is not None else "")])
    if not rows:
        return []
    return ["", "mitigation effect (paired with the same cell unmitigated: same teacher, replicates, eval prompts):",
            *_table(["mitigation", "point", "distill", "student", "relation", "ratio_none", "ratio_mit", "reduction",
                     "95% CI", "data kept", "student fit", "detector TPR@FPR"], rows),
            "reduction = 1 - ratio_mit / ratio_none (paired bootstrap CI); student fit = the student's final fit "
            "(KL to its teacher, or loss) relative to the unmitigated student's (> 1: worse)."]


def _fit_summary(fits: list[dict[str, Any]], distiller: str | None = None) -> str:
    """The mean over replicates of the figure the distiller names in its ``fit_summary``."""
    from subbench.components import Distiller
    from subbench.plugins import get_manager

    try:
        comp = get_manager().get("distillers", distiller) if distiller else Distiller()
    except Exception:  # an entry from a plugin that is not installed: the base class's reading
        comp = Distiller()
    vals = [v for v in (comp.fit_summary((f or {}).get("student") or {}) for f in fits) if v is not None]
    if not vals:
        return "-"
    return f"{vals[0][0]}={sum(v for _, v in vals) / len(vals):.4f}"
