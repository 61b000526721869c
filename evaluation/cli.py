"""`radreport evaluate`: score a predictions file, or generate and score a split with a bundle."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `evaluate` command to the radreport CLI."""

    @app.command("evaluate")
    def evaluate(
        predictions: Path | None = typer.Argument(
            None, help="JSONL or CSV with id, hypothesis, reference (omit with --bundle)."
        ),
        out: Path = typer.Option(Path("evaluation-run"), "--out", "-o", help="Output folder."),
        bundle: Path | None = typer.Option(
            None, help="Model bundle directory to generate reports with."
        ),
        data: Path | None = typer.Option(
            None, help="MIMIC-CXR-layout data directory (with --bundle)."
        ),
        split: str = typer.Option("test", help="Split to generate (with --bundle)."),
        batch_size: int = typer.Option(8, help="Studies per generation batch (with --bundle)."),
        max_studies: int | None = typer.Option(
            None, help="Only the first N studies (with --bundle)."
        ),
        baseline: Path | None = typer.Option(
            None, help="Predictions of another system on the same studies: adds a paired test."
        ),
        resamples: int = typer.Option(
            500, help="Bootstrap resamples for the confidence intervals."
        ),
        seed: int = typer.Option(0, help="Seed of the bootstrap."),
        tokenizer: str = typer.Option("ptb", help="NLG tokenizer: ptb, whitespace or ptb-java."),
        uncertain: str = typer.Option(
            "negative", help="CheXpert uncertain labels count as: negative or positive."
        ),
        case_sensitive: bool = typer.Option(
            False,
            "--case-sensitive",
            help="RadGraph tokens compared as radgraph 0.1.18 (default: lower-cased).",
        ),
        extractor: str | None = typer.Option(
            None, help="RadGraph extractor backend (default: rules)."
        ),
    ) -> None:
        """Score generated reports against references: NLG, RadGraph F1, CheXpert F1 with CIs."""
        from rich.console import Console  # noqa: PLC0415

        from evaluation import UnknownMetricError, metric  # noqa: PLC0415
        from evaluation.radgraph import ExtractorUnavailableError  # noqa: PLC0415
        from evaluation.run import PredictionsFileError, evaluate_bundle, evaluate_predictions  # noqa: PLC0415
        from evaluation.tokenize import TokenizerError  # noqa: PLC0415

        console = Console()
        options = dict(resamples=resamples, seed=seed, tokenizer=tokenizer, uncertain=uncertain,
                       lowercase=not case_sensitive, extractor=extractor)
        if uncertain not in ("negative", "positive"):
            raise typer.BadParameter("--uncertain must be 'negative' or 'positive'")
        if (predictions is None) == (bundle is None):
            raise typer.BadParameter("give either a predictions file or --bundle with --data")
        try:
            if bundle is not None:
                if data is None:
                    raise typer.BadParameter("--bundle needs --data (a MIMIC-CXR-layout folder)")
                results = evaluate_bundle(bundle, data, split, out, batch_size,
                                          max_studies=max_studies, **options)
            else:
                with console.status("scoring reports"):
                    results = evaluate_predictions(predictions, out, baseline=baseline, **options)
        except (PredictionsFileError, ExtractorUnavailableError, TokenizerError,
                UnknownMetricError) as error:
            console.print(f"[red]cannot evaluate:[/red] {error}")
            raise typer.Exit(code=2) from None
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=f"{results['reports']} reports")
        for column in ("metric", "value", "95 % CI"):
            table.add_column(column)
        for name, ci in results["metrics"].items():
            if not metric(name).headline:
                continue
            table.add_row(name, f"{ci['value']:.4f}", f"[{ci['low']:.4f}, {ci['high']:.4f}]")
        console.print(table)
        console.print(f"uncertain CheXpert labels as {uncertain}; tokenizer {tokenizer}; "
                      f"wrote {out}/results.json, per_report.csv, report.html")
