"""Chapter 6's prose quotes its stored run: every number a results paragraph states is
recomputed here from the run's own outputs (the headline metrics, the objective table,
the Welch verdicts, the capacity study's table, the seed study's sentence).

When the chapter is executed again (a GPU run, another step count), these tests fail
until the prose says what the new run shows: edit
``notebooks/src/06_disentanglement.py`` and ``jupytext --sync`` it (the outputs are
kept)."""

import json
import re
from pathlib import Path

import pytest

from betavae_lib.report import parse_headlines

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks/06_disentanglement.ipynb"


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return "".join(output["text"])
    data = output.get("data", {})
    return "".join(data.get("text/markdown", data.get("text/plain", "")))


@pytest.fixture(scope="module")
def run():
    nb = json.loads(NOTEBOOK.read_text())
    outputs = [
        _text(o) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
    ]
    prose = " ".join(
        "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"
    )
    headline = parse_headlines("\n".join(outputs))
    if not headline:
        pytest.skip("chapter 6 is stored without its outputs")
    return {
        "prose": re.sub(r"\s+", " ", prose),
        "outputs": outputs,
        "headline": headline,
    }


def _table(outputs, first_header: str) -> dict[str, dict[str, str]]:
    """The markdown table whose header starts with ``first_header``: row -> column ->
    cell, by the table's own column names."""
    (text,) = [t for t in outputs if t.startswith(f"| {first_header} |")]
    header, _, *rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return {cells[0]: dict(zip(header[1:], cells[1:])) for cells in rows}


def _mean(cell: str) -> str:
    """The mean of a "mean ± sd" cell, as printed."""
    return cell.split(" ± ")[0]


def _says(run, sentence: str) -> None:
    assert sentence in run["prose"], f"chapter 6 no longer says: {sentence!r}"


def test_the_mig_means_and_the_verdicts(run):
    h = run["headline"]
    _says(
        run,
        f"MIG rises with β ({h['mig_beta1']:.3f}, {h['mig_beta4']:.3f}, "
        f"{h['mig_beta10']:.3f} for β = 1, 4, 10) and β-TCVAE ({h['mig_tcvae']:.3f})",
    )
    assert h["mig_beta1"] < h["mig_beta4"] < h["mig_beta10"]
    assert h["mig_tcvae"] > h["mig_beta1"]
    (verdicts,) = [t for t in run["outputs"] if t.startswith("- MIG, ")]
    lines = [line for line in verdicts.splitlines() if line.startswith("- ")]
    assert len(lines) == 4 and all(line.endswith("**a tie**") for line in lines)
    _says(run, "every comparison above is a tie")
    seed_sd, eval_sd = re.search(
        r"MIG: ([\d.]+) between seeds .* against ([\d.]+) between evaluation", verdicts
    ).groups()
    _says(
        run,
        f"seed sd of MIG ({seed_sd} on average) dwarfs the evaluation's ({eval_sd})",
    )
    assert float(seed_sd) > 10 * float(eval_sd)
    fv = [
        h[f"factorvae_{k}"] for k in ("beta1", "beta4", "beta10", "capacity", "tcvae")
    ]
    _says(run, f"FactorVAE score ({min(fv):.2f} to {max(fv):.2f}, ties again)")


def test_what_beta_changes_beyond_the_seeds(run):
    h, table = run["headline"], _table(run["outputs"], "model")
    betas = ["β = 1", "β = 4", "β = 10"]
    mi = " → ".join(f"{h[k]:.2f}" for k in ("mi_beta1", "mi_beta4", "mi_beta10"))
    _says(run, f"MI(x; z) falls {mi} nats")
    recon = " → ".join(_mean(table[b]["recon"]) for b in betas)
    _says(run, f"reconstruction worsens {recon}")
    _says(run, "TC falls " + " → ".join(_mean(table[b]["TC"]) for b in betas))
    tcvae, b4, b10 = table["β-TCVAE (β = 6)"], table["β = 4"], table["β = 10"]
    _says(
        run,
        f"TC {tcvae['TC']} with KL {_mean(tcvae['KL'])}, where β = 4 ends at "
        f"{b4['TC']} with KL {_mean(b4['KL'])}: a tie",
    )
    _says(
        run,
        f"β = 10 spends almost none of its KL that way ({_mean(b10['KL'])} "
        f"against MI {_mean(b10['MI(x; z)'])})",
    )


def test_the_capacity_study_encoded_nothing(run):
    study = _table(run["outputs"], "setting")
    assert len(study) == 7
    kl_mi_active = [
        (float(c["KL [nats]"]), float(c["MI(x; z) [nats]"]), int(c["active units"]))
        for c in study.values()
    ]
    assert all(active == 0 for _, _, active in kl_mi_active)
    most = max(mi for _, mi, _ in kl_mi_active)
    assert most < 0.05  # nothing, against the table's 6-9 nats
    _says(run, f"MI(x; z) is at most {most:.2f} nats and no latent is an active unit")
    targets = [float(re.search(r"C → (\d+)", name).group(1)) for name in study]
    worst = max(abs(kl - c) for (kl, _, _), c in zip(kl_mi_active, targets))
    _says(run, f"ended within {worst:.1f} nats of it")
    table = _table(run["outputs"], "model")
    capacity = table[next(r for r in table if r.startswith("capacity"))]
    _says(run, f"did learn a code: MI {_mean(capacity['MI(x; z)'])} nats")


def test_the_seed_study(run):
    h = run["headline"]
    within, between = (
        h["seed_study_mig_sd_within_beta"],
        h["seed_study_mig_sd_between_betas"],
    )
    assert within > between
    _says(
        run,
        f"the seeds of one β differed more (sd {within:.3f}) than the β's did "
        f"({between:.3f})",
    )
    (sentence,) = [t for t in run["outputs"] if "Spearman ρ" in t]
    rho, p = re.search(r"ρ = ([-\d.]+) \(p = ([\d.e-]+)\)", sentence).groups()
    _says(run, f"(ρ = {rho}, p = {p})")
