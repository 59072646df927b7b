"""``privrank search``: catalogue search, personalised by a user's history.

- ``privrank search build --dataset ml-100k --out DIR [--protocol P] [options]``: train a search
  model (BM25 + embedding retrieval, LambdaMART re-ranking with history features) on a data set
  (all of it, or the ``train`` part of a protocol) and save it.
- ``privrank search query --model-dir DIR --query TEXT [--user ID | --history ID,ID,...]``: the
  top results, personalised when a known user or a history is given, with per-stage times.
- ``privrank search evaluate [--protocol ml100k-search] [--out FILE]``: the offline protocol
  (:mod:`privrank.workflow.search_protocol`): BM25 + embedding vs the unpersonalised and the
  personalised ranker, per-query NDCG with CIs and paired tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from privrank.atomic import atomic_file
from privrank.cli._console import make_console
from privrank.cli.app import app
from privrank.errors import ConfigError

__all__ = ["build", "evaluate_search_command", "query", "search_app"]

search_app = typer.Typer(help="Catalogue search: BM25 + embeddings, personalised by history.")
app.add_typer(search_app, name="search", no_args_is_help=True)


def _config(
    cf_model: str, candidates: int, rounds: int, seed: int, personalised: bool
) -> dict[str, Any]:
    return {
        "cf_model": cf_model,
        "candidates": candidates,
        "rounds": rounds,
        "seed": seed,
        "personalised": personalised,
    }


@search_app.command("build")
def build(
    out: Annotated[Path, typer.Option(help="Directory to write the search model to.")],
    dataset: Annotated[str, typer.Option(help="A catalog data set with item text.")] = "ml-100k",
    protocol: Annotated[
        str | None, typer.Option(help="Train on this protocol's train part only.")
    ] = None,
    item_text: Annotated[
        str | None, typer.Option(help="Item text: a catalog name or a TSV file.")
    ] = None,
    cf_model: Annotated[str, typer.Option(help="Collaborative model of the features.")] = "ease",
    candidates: Annotated[int, typer.Option(help="Candidates re-ranked per query.")] = 200,
    rounds: Annotated[int, typer.Option(help="Boosting rounds of the ranker.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the carve and the ranker.")] = 0,
    personalised: Annotated[bool, typer.Option(help="Use the history features.")] = True,
) -> None:
    """Train and save a search model."""
    from privrank.data.item_text import load_item_text
    from privrank.ranking.search import PersonalisedSearch
    from privrank.workflow.protocols import load_dataset, prepare

    if protocol is not None:
        parts = prepare(protocol)
        train = parts.train
        source = item_text or parts.spec.dataset
    else:
        train = load_dataset(dataset)
        source = item_text or dataset
    text = load_item_text(source)
    engine = PersonalisedSearch(_config(cf_model, candidates, rounds, seed, personalised))
    engine.fit(train, text)
    engine.save(out)
    facts = engine.training_
    make_console().print(
        f"search model on {len(engine.item_ids_)} items written to {out} (ranker trained on "
        f"{facts['groups']} validation queries, {facts['rows']} candidate rows)"
    )


def _history_codes(engine: Any, user: str | None, history: str | None) -> list[Any] | None:
    if user is not None and history is not None:
        raise ConfigError("give --user or --history, not both")
    cf = engine.cf_
    if user is not None:
        codes = cf.user_codes([_id(user, cf.user_ids_)])
        if codes[0] < 0:
            raise ConfigError(f"--user {user}: not a user of this search model")
        indptr, items = cf.history_indptr_, cf.history_items_
        return [items[indptr[codes[0]] : indptr[codes[0] + 1]]]
    if history is not None:
        ids = [_id(h.strip(), cf.item_ids_) for h in history.split(",") if h.strip()]
        query = cf.history_query([ids])
        assert query.items is not None
        return [query.items]
    return None


def _id(text: str, vocabulary: Any) -> Any:
    """An external id typed like the vocabulary's (integers stay integers)."""
    import pyarrow as pa

    if pa.types.is_integer(vocabulary.type):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{text!r}: the ids of this model are integers") from None
    return text


@search_app.command("query")
def query(
    model_dir: Annotated[Path, typer.Option(help="A `privrank search build` directory.")],
    query: Annotated[str, typer.Option("--query", help="The search text.")],
    user: Annotated[str | None, typer.Option(help="A known user id: personalise.")] = None,
    history: Annotated[
        str | None, typer.Option(help="Comma-separated item ids: personalise by them.")
    ] = None,
    k: Annotated[int, typer.Option(help="Results to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the catalogue."""
    from privrank.ranking.search import PersonalisedSearch

    engine = PersonalisedSearch.load(model_dir)
    histories = _history_codes(engine, user, history)
    result = engine.search([query], histories, k)
    rows = [
        {"item": engine.item_ids_[c], "text": engine.texts_[c], "score": float(s)}
        for c, s in zip(result.items[0].tolist(), result.scores[0].tolist(), strict=True)
        if c >= 0
    ]
    if as_json:
        payload = {"query": query, "personalised": histories is not None, "results": rows}
        typer.echo(json.dumps(payload | {"timings_s": result.timings}))
        return
    table = Table(title=f"{query!r}" + (" (personalised)" if histories else ""))
    for column in ("rank", "item", "text", "score"):
        table.add_column(column)
    for rank, row in enumerate(rows, start=1):
        table.add_row(str(rank), str(row["item"]), row["text"], f"{row['score']:.4f}")
    console = make_console()
    console.print(table)
    stages = ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in result.timings.items())
    console.print(f"stages: {stages}")


@search_app.command("evaluate")
def evaluate_search_command(
    protocol: Annotated[str, typer.Option(help="A search protocol.")] = "ml100k-search",
    out: Annotated[Path | None, typer.Option(help="Write the summary JSON here.")] = None,
    cf_model: Annotated[str, typer.Option(help="Collaborative model of the features.")] = "ease",
    candidates: Annotated[int, typer.Option(help="Candidates re-ranked per query.")] = 200,
    rounds: Annotated[int, typer.Option(help="Boosting rounds of the ranker.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the carve and the ranker.")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
) -> None:
    """Compare BM25 + embedding search with the unpersonalised and personalised rankers."""
    from privrank.workflow.search_protocol import BASELINE, evaluate_search

    evaluation = evaluate_search(
        protocol, _config(cf_model, candidates, rounds, seed, True), resamples=resamples
    )
    summary = evaluation.to_dict()
    if out is not None:
        with atomic_file(out, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(summary, indent=2) + "\n")
    counts = evaluation.counts
    table = Table(title=f"{evaluation.protocol}: {counts['queries']} queries, 95% bootstrap CIs")
    for column in ("system", "NDCG@10", f"Δ vs {BASELINE}", "relative", "p (t / Wilcoxon)"):
        table.add_column(column)
    for name, ci in evaluation.cis.items():
        cells = [name, f"{ci.estimate:.4f} [{ci.low:.4f}, {ci.high:.4f}]"]
        if name in evaluation.paired:
            p = evaluation.paired[name]
            cells += [
                f"{p.mean_difference:+.4f}",
                f"{p.mean_difference / p.mean_b:+.1%}",
                f"{p.t_pvalue:.1e} / {p.wilcoxon_pvalue:.1e}",
            ]
        else:
            cells += ["baseline", "", ""]
        table.add_row(*cells)
    console = make_console()
    console.print(table)
    console.print(
        f"users without a query: {counts['users_without_query']} of "
        f"{counts['users_with_heldout']}; catalogue items per query genre set: median "
        f"{summary['catalogue_matches']['median']:.0f}, min {summary['catalogue_matches']['min']}"
    )
