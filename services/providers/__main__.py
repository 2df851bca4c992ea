"""python -m providers: the provider worker (Provider.Generate)."""

from __future__ import annotations

from providers.observer import GenerateCalls
from providers.registry import ProviderRegistry
from providers.server import ProviderServicer
from switchyard import logs, metrics, settings, telemetry
from switchyard.config import load_config
from switchyard.grpc_server import run, serve


async def main() -> None:
    env = settings.load(settings.ProvidersSettings)
    logs.setup("providers", env.log_level)
    config = load_config(env.config)
    registry = ProviderRegistry(config)
    tracer = telemetry.setup("providers", env)
    metrics_registry = metrics.new_registry() if env.metrics_address else None
    client_metrics = metrics.GenAiClientMetrics(metrics_registry) if metrics_registry is not None else None
    observer = GenerateCalls(tracer, client_metrics, config.providers) \
        if tracer is not None or client_metrics is not None else None
    servicer = ProviderServicer(registry, observer)
    runner = await metrics.serve(env.metrics_address, metrics_registry) \
        if metrics_registry is not None and env.metrics_address else None

    async def stop() -> None:
        await registry.close()
        if runner is not None:
            await runner.cleanup()

    await serve(env.address, servicer.register, grace=env.grace_s, on_drain=servicer.session.drain, on_stop=stop)
    telemetry.shutdown()


if __name__ == "__main__":
    run(main)
