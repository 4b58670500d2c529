"""Table and figure of the fixed-budget sweep: test accuracy against redundancy r at fixed budget
B, one panel per worker quality, one line per aggregation method (Khetan, Lipton & Anandkumar,
ICLR 2018, Fig. 2-3)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

KEYS = ["budget", "worker_model", "quality", "method", "redundancy"]


def budget_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of ``test_accuracy`` per (budget, worker model,
    quality, method, redundancy), plus ``best_r``: the redundancy with the highest mean for
    that (budget, worker model, quality, method)."""
    # Tune's table holds both the reported metrics and ``config/<key>``: prefer the metrics
    config = {c: c.removeprefix("config/") for c in trials.columns if c.startswith("config/")}
    extra = {c: k for c, k in config.items() if k not in trials.columns}
    trials = trials.drop(columns=[c for c in config if c not in extra]).rename(columns=extra)
    keys = [k for k in KEYS if k in trials.columns]
    table = (trials.groupby(keys)["test_accuracy"].agg(["mean", "std", "count"])
             .reset_index().rename(columns={"mean": "test_accuracy_mean",
                                            "std": "test_accuracy_std", "count": "trials"}))
    group = [k for k in keys if k != "redundancy"]
    best = table.loc[table.groupby(group)["test_accuracy_mean"].idxmax(), group + ["redundancy"]]
    return table.merge(best.rename(columns={"redundancy": "best_r"}), on=group)


def plot_budget_sweep(table: pd.DataFrame, path: str | Path) -> Path:
    """Accuracy-vs-redundancy figure (PNG) of a ``budget_table``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qualities = sorted(table["quality"].unique())
    fig, axes = plt.subplots(1, len(qualities), figsize=(3.6 * len(qualities), 3.2),
                             sharey=False, squeeze=False)
    for ax, quality in zip(axes[0], qualities, strict=True):
        part = table[table["quality"] == quality]
        for method, rows in part.groupby("method"):
            rows = rows.sort_values("redundancy")
            ax.errorbar(rows["redundancy"], rows["test_accuracy_mean"],
                        yerr=rows["test_accuracy_std"].fillna(0.0), marker="o", capsize=3,
                        label=str(method))
        ax.set_title(f"hammer probability {quality}", fontsize=9)
        ax.set_xlabel("labels per item r (fixed budget)")
        ax.set_xticks(sorted(part["redundancy"].unique()))
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8)
    budgets = ", ".join(str(b) for b in sorted(table["budget"].unique())) \
        if "budget" in table else "?"
    fig.suptitle(f"fixed budget B = {budgets}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
