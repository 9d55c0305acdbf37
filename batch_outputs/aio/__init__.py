"""The async ``OutputIndexClient``: ``batch_outputs.OutputIndexClient`` method for method, awaited.

    from azure.core.credentials import AzureKeyCredential
    from batch_outputs.aio import OutputIndexClient

    async with OutputIndexClient("https://myapp.azurewebsites.net", AzureKeyCredential(key)) as client:
        async for item in client.list_outputs("render-42", kind="TaskPreview"):
            print(item.task_id, item.path)

It runs on asyncio over azure-core's ``AsyncioRequestsTransport`` (the wheel needs no aiohttp);
pass ``transport=azure.core.pipeline.transport.AioHttpTransport()`` where aiohttp is installed.
"""

from __future__ import annotations

from ._client import OutputIndexClient

__all__ = ["OutputIndexClient"]
