"""Runs an experiment: every cell's stages through the artifact store, then its entries.

Stages (each an artifact keyed by the hash of its inputs and the component versions):
``base`` → ``inject`` → ``generate`` → ``filter`` → [``mitigate``] → ``distill`` → ``evaluate``.
A mitigation acts at its point (docs/mitigations.md): ``generate`` (decoding, activations),
``mitigate`` (data) or ``distill`` (training), on the teacher's side and the control's alike.
Models are loaded only when a stage has to run, so a fully cached re-run touches no
weights and imports no deep-learning library.
"""

from __future__ import annotations

import json
import os
import re
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


@dataclass
class Source:
    """A model a stage reads: a base, a teacher (base + injector) or a distilled student."""

    key: str
    label: str
    loader: Callable[[], Any]


class BoundJudge:
    """A judge with the experiment's params bound, handed to ``Trait.evaluate``."""

    def __init__(self, spec: Spec):
        self.component = spec.component
        self.params = spec.params
        self.name = spec.component.name
        self.needs = spec.component.needs

    def score(self, samples, target, params=None, ctx=None):
        return self.component.score(samples, target, self.params, ctx)

    def __getattr__(self, item):
        return getattr(self.component, item)


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
    ):
        self.exp = exp
        self.jobs = max(1, int(jobs))
        self.workdir = Path(workdir)
        self.out = Path(out)
        self.ctx = Context(workdir=self.workdir, device=device, quiet=quiet)
        self.store = ArtifactStore(self.workdir / "artifacts", fresh=fresh)
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._torch_ready = False
        self.stats = {"run": 0, "cached": 0}

    # -- models ------------------------------------------------------------------
    def _prepare(self) -> None:
        if not self._torch_ready:
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
            self.stats["cached"] += 1
            return found
        self.ctx.log(f"[{stage}] {label} ...")
        started = time.time()

        def run(tmp: Path) -> dict[str, Any]:
            self.store.verify_pending()
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

    def prebuild_bases(self) -> None:
        """Build the missing base models of the grid side by side (``--jobs``), one process each.

        Building (pretraining) a tiny family is the longest stage of a small run and the
        builds are independent; each worker uses one torch thread. Families a worker
        cannot resolve (registered in-process only) are left to the serial pass.
        """
        self.build_bases(self.missing_bases(self.exp))

    def missing_bases(self, exp) -> dict[str, tuple]:
        """The bases of ``exp``'s teacher and students not in the store: key -> (family, seed, params)."""
        wanted: dict[str, tuple] = {}
        for r in exp.seeds:
            t_seed = exp.teacher_seed_for(r)
            for fam, seed, params in [(exp.teacher_family, t_seed, exp.teacher_params)] + [
                (s.family, s.resolve_seed(t_seed), s.params) for s in exp.students
            ]:
                inputs = base_inputs(fam, seed, params)
                if self.store.lookup("base", inputs) is None:
                    wanted.setdefault(self.store.key(inputs), (fam, seed, params))
        return wanted

    def build_bases(self, wanted: dict[str, tuple]) -> None:
        """Build ``wanted`` (from :meth:`missing_bases`) in ``--jobs`` worker processes."""
        if self.jobs < 2 or len(wanted) < 2:
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        self.ctx.log(f"[base] building {len(wanted)} base models in {min(self.jobs, len(wanted))} processes ...")
        started = time.time()
        args = [(f.name, seed, params, str(self.workdir), self.ctx.device, self.store.fresh) for f, seed, params in wanted.values()]
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(wanted)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_build_base_worker, *a): key for a, key in zip(args, wanted)}
            with self.ctx.progress(total=len(futures), desc="build base models", unit="model") as bar:
                for fut in as_completed(futures):
                    try:
                        built = fut.result()
                    except SubbenchError:
                        raise
                    except Exception:  # the serial pass rebuilds it and names the failing component
                        built = False
                    if built:
                        self.store.mark_refreshed("base", futures[fut])
                        self.stats["run"] += 1
                    bar.update(1)
        self.ctx.log(f"[base] built in {time.time() - started:.1f}s")

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

    def mitigate_pair(self, data: Artifact, control: Artifact, seed: int, mit: Spec | None) -> tuple[Artifact, Artifact]:
        """A data defence on the teacher's and the control's kept data: one call sees both sides."""
        if _point(mit) != "data":
            return data, control
        comp = mit.component
        if getattr(type(comp), "apply_pair", Mitigation.apply_pair) is Mitigation.apply_pair:
            # each side on its own: the single-side stage, with the same keys as before the track
            return self.mitigate(data, seed, mit), self.mitigate(control, seed, mit)
        arts = []
        for role in ("teacher", "control"):
            inputs = {"data": data.key, "control": control.key, "role": role, "mitigation": mit.name,
                      "version": comp.version, "params": mit.params, "seed": seed}

            def fn(tmp: Path, role=role) -> dict[str, Any]:
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

            arts.append(self._stage("mitigate", f"{mit.name} ({role})", inputs, fn))
        return arts[0], arts[1]

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
            try:
                result = dict(comp.distill(ref, rows, teacher, dist.params, seed, tmp, self.ctx) or {})
            finally:
                for h in hooks:
                    h.remove()
            result.setdefault("sha256", sha256_dir(tmp))
            return result

        return self._stage("distill", f"{comp.name} {role} {student.family.name}", inputs, fn)

    def student_source(self, student: StudentSpec, art: Artifact) -> Source:
        return Source(art.key, f"student {student.family.name}", lambda: student.family.load(art.path, self.ctx))

    def evaluate(self, source: Source) -> Artifact:
        exp = self.exp
        trait, judge = exp.trait, exp.judge
        inputs = {
            "model": source.key,
            "trait": trait.name,
            "trait_version": trait.component.version,
            "target": exp.target,
            "params": trait.params,
            "judge": judge.name,
            "judge_version": judge.component.version,
            "judge_params": judge.params,
        }

        def fn(tmp: Path) -> dict[str, Any]:
            model = self.load(source)
            records = trait.component.evaluate(model, BoundJudge(judge), exp.target, trait.params, self.ctx)
            if not records:
                raise SubbenchError(f"Trait {trait.name} produced no evaluation samples for {source.label}.")
            for r in records:
                if not isinstance(r.get("score"), (int, float)):
                    raise SubbenchError(f"Trait {trait.name} returned a sample without a numeric score: {r!r:.200}.")
            write_jsonl(tmp / "samples.jsonl", records)
            scores = [float(r["score"]) for r in records]
            result = {"n": len(scores), "mean": sum(scores) / len(scores), "sha256": sha256_file(tmp / "samples.jsonl")}
            summary = judge.component.summarize(records, judge.params)
            if summary:
                result["judge_summary"] = summary
            return result

        return self._stage("evaluate", f"{trait.name} on {source.label}", inputs, fn)

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

    def teacher_kl(self, base_src: Source, t_src: Source, filt: Artifact) -> dict[str, Any] | None:
        """KL(teacher || base) on the teacher's kept data, once per teacher dataset (open-weight teachers only)."""
        fam = self.exp.teacher_family
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

        return self._stage("teacher_kl", f"teacher KL from base on {filt.result.get('n_kept')} kept", inputs, fn).result

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

    def budgets(self, data: Artifact, control: Artifact, seed: int) -> tuple[Artifact, Artifact, dict[str, Any]]:
        """Teacher and control data cut to one size: the smaller kept count, or ``domain.budget``."""
        n_t, n_c = int(data.result["n_kept"]), int(control.result["n_kept"])
        n = min(n_t, n_c)
        info: dict[str, Any] = {"rule": self.exp.budget, "n_teacher_kept": n_t, "n_control_kept": n_c}
        if isinstance(self.exp.budget, int):
            info["short"] = n < self.exp.budget
            n = min(n, self.exp.budget)
        info["n_train"] = n
        return self.budget(data, n, seed, "teacher"), self.budget(control, n, seed, "control"), info

    # -- the grid ----------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        if self.exp.teachers:  # several teachers: each one's cells as a single-teacher run (run_teachers)
            return run_teachers(self)
        exp = self.exp
        t_family = exp.teacher_family
        self.prebuild_bases()
        glabels = grid_labels(exp.grid)
        dlabels = distillation_labels(exp.distillations)
        mits = exp.mitigations
        mlabels = mitigation_labels(mits)
        cells = {(mi, gi, di, si): Cell(glabels[gi], g, d, dlabels[di], s, mitigation=m, mitigation_label=mlabels[mi])
                 for mi, m in enumerate(mits) for gi, g in enumerate(exp.grid)
                 for di, d in enumerate(exp.distillations) for si, s in enumerate(exp.students)}
        if None in mits and len(mits) > 1:  # paired scoring: each mitigated cell against the same cell unmitigated
            none_i = mits.index(None)
            for (mi, gi, di, si), c in cells.items():
                if mi != none_i:
                    c.baseline = cells[(none_i, gi, di, si)]
        for r in exp.seeds:
            t_seed = exp.teacher_seed_for(r)
            base_art = self.base(t_family, t_seed, exp.teacher_params)
            base_src = self.base_source(t_family, base_art)
            base_eval = self.evaluate(base_src)
            for mi, mit in enumerate(mits):
                self._replicate(cells, mi, mit, r, t_seed, base_art, base_src, base_eval)
        self._models.clear()
        return self.entries(list(cells.values()))

    def _replicate(self, cells, mi: int, mit: Spec | None, r: int, t_seed: int, base_art: Artifact, base_src: Source,
                   base_eval: Artifact) -> None:
        """One replicate of every cell under mitigation ``mit`` (None: unmitigated)."""
        exp = self.exp
        t_family = exp.teacher_family
        base_res = self.residual(base_src, t_family)
        teachers = []
        for g in exp.grid:
            t_art = self.inject(t_family, base_art, g, r)
            t_src = self.teacher_source(t_family, base_art, t_art)
            pair = (t_src, base_src)
            control_filter = self.filter(self.generate(base_src, r, mit, pair))
            filt = self.filter(self.generate(t_src, r, mit, pair))
            mdata, mcontrol = self.mitigate_pair(filt, control_filter, r, mit)
            data, control_data, budget = self.budgets(mdata, mcontrol, r)
            if mdata is not filt:
                budget["mitigation"] = {"n_teacher_in": filt.result["n_kept"], "n_control_in": control_filter.result["n_kept"],
                                        **({"info": mdata.result["info"]} if mdata.result.get("info") else {})}
            teachers.append({"source": t_src, "eval": self.evaluate(t_src), "filter": filt, "data": data,
                             "control_data": control_data, "budget": budget, "control_filter": control_filter, "pair": pair,
                             "kl": self.teacher_kl(base_src, t_src, filt), "residual": self.residual(t_src, t_family),
                             "inject": t_art.result})
        for si, s in enumerate(exp.students):
            s_seed = s.resolve_seed(t_seed)
            s_base = self.base(s.family, s_seed, s.params)
            for di, d in enumerate(exp.distillations):
                for gi, t in enumerate(teachers):
                    if d.component.fixed_point_on_self and s_base.key == base_art.key:
                        control_fit = {"identical_to_teacher": True, "final_kl_to_teacher": 0.0,
                                       "note": "same-init control of a fixed-point distiller: the base itself"}
                        c_src = self.base_source(s.family, s_base)
                    else:
                        control = self.distill(s, s_base, t["control_data"], base_src, d, r, "control", mit, t["pair"])
                        control_fit = control.result.get("fit")
                        c_src = self.student_source(s, control)
                    c_eval = self.evaluate(c_src)
                    st = self.distill(s, s_base, t["data"], t["source"], d, r, "student", mit, t["pair"])
                    st_src = self.student_source(s, st)
                    cells[(mi, gi, di, si)].replicates.append(Replicate(
                        seed=r, teacher_seed=t_seed, student_seed=s_seed, teacher_base=base_art, student_base=s_base,
                        evals={"base": base_eval, "teacher": t["eval"], "control": c_eval, "student": self.evaluate(st_src)},
                        teacher_filter=t["filter"], control_filter=t["control_filter"], data=t["data"],
                        control_data=t["control_data"], student_fit=st.result.get("fit"), control_fit=control_fit,
                        budget=t["budget"], teacher_kl=t["kl"], inject=t["inject"],
                        residuals={"base": base_res, "teacher": t["residual"], "control": self.residual(c_src, s.family),
                                   "student": self.residual(st_src, s.family)}))

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
            entries.append(make_entry(exp, cell, cell_id, self.workdir, env, commit, created))
        out_dir = self.out / exp.name
        out_dir.mkdir(parents=True, exist_ok=True)
        for e in entries:
            atomic_write_text(out_dir / f"{e['cell']['id']}.json", json.dumps(e, indent=2, sort_keys=True) + "\n")
        return entries


def run_teachers(runner: Runner) -> list[dict[str, Any]]:
    """A multi-teacher experiment (``teacher:`` a list): an outer loop over its teachers.

    Each teacher's view (:meth:`Experiment.views`) runs exactly as a single-teacher
    experiment would, so shared stages (a student base, a base's samples) are cached once;
    its entries' cell ids start with the teacher's label (:func:`subbench.cell.teacher_cell_id`).
    """
    whole = runner.exp
    entries: list[dict[str, Any]] = []
    views = whole.views()
    wanted: dict[str, tuple] = {}
    for view in views:  # every teacher's missing bases side by side, not one teacher's at a time
        wanted.update(runner.missing_bases(view))
    runner.build_bases(wanted)
    try:
        for view in views:
            runner.exp = view
            entries.extend(runner.run())
    finally:
        runner.exp = whole
    return entries


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


def mitigation_labels(mits: list) -> list[str]:
    """'none', the name, or the name and its differing params when a name appears twice."""
    return ["none" if m is None else _spec_label(m, mits) for m in mits]


def base_inputs(family, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    return {"family": family.name, "version": family.version, "seed": seed, "params": params}


def build_base(family, seed: int, params: dict[str, Any], tmp: Path, ctx: Context) -> dict[str, Any]:
    result = dict(family.build(seed, params, tmp, ctx) or {})
    result.setdefault("sha256", sha256_dir(tmp))
    return result


def _build_base_worker(family_name: str, seed: int, params: dict[str, Any], workdir: str, device: str, fresh: bool) -> bool:
    """Runs in a worker process: build one base into the shared store. True when it ran."""
    from subbench.errors import UnknownName
    from subbench.plugins import get_manager

    try:
        family = get_manager().get("families", family_name)
    except UnknownName:
        return False  # an in-process plugin: the serial pass builds it
    ctx = Context(workdir=Path(workdir), device=device, quiet=True)
    ctx.setup_torch()
    store = ArtifactStore(Path(workdir) / "artifacts", fresh=fresh, clean=False)
    art = store.produce("base", base_inputs(family, seed, params), lambda tmp: build_base(family, seed, params, tmp, ctx))
    return not art.cached


def default_jobs() -> int:
    """Worker processes for independent builds: $SUBBENCH_JOBS, else up to 2 (one per core)."""
    from subbench.context import env_int

    return env_int("SUBBENCH_JOBS", max(1, min(2, os.cpu_count() or 1)))


def _short(params: dict[str, Any]) -> str:
    items = [f"{k}={v}" for k, v in params.items() if not isinstance(v, (dict, list))]
    text = ",".join(items)
    return text if len(text) < 60 else text[:57] + "..."


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
            _fit_summary(e["distillation"]["fit"]),
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


def _fit_summary(fits: list[dict[str, Any]]) -> str:
    vals = []
    for f in fits:
        fit = (f or {}).get("student") or {}
        for k in ("final_kl_to_teacher", "final_aux_kl", "final_kl", "final_loss"):
            if isinstance(fit.get(k), (int, float)):
                vals.append((k, fit[k]))
                break
    if not vals:
        return "-"
    k = vals[0][0].replace("final_", "")
    return f"{k}={sum(v for _, v in vals) / len(vals):.4f}"
