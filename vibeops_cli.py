import typer

app = typer.Typer()


@app.command("relay")
def relay(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(8089, help="Port to listen on."),
    token_file: str = typer.Option(
        "", help="File holding the bearer token Alertmanager sends (else $VIBEOPS_RELAY_TOKEN)."
    ),
    prefect_api_url: str = typer.Option("", help="Prefect API URL (default: PREFECT_API_URL)."),
    dedupe_window: float = typer.Option(
        300.0, min=0, help="Seconds in which a repeat of the same alert and status is dropped."
    ),
) -> None:
    """Relay Alertmanager webhooks to Prefect events, so alerts start their runbooks."""
    from pathlib import Path

    from deployments.relay.app import run_relay

    run_relay(
        host, port, Path(token_file) if token_file else None, prefect_api_url or None, dedupe_window
    )
