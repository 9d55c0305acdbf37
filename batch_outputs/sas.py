"""A SAS URL of a job's output container, for tasks that write with Batch's own OutputFiles
(.NET's ``CloudJob.GetOutputStorageContainerUrl``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Union

from azure.storage.blob import BlobServiceClient, ContainerClient, ContainerSasPermissions, generate_container_sas

from .clients import split_container_url
from .errors import OutputStorageError

#: .NET's default: the longest a task can stay active, and the longest a user delegation key lives.
DEFAULT_SAS_EXPIRY = timedelta(days=7)
#: Tolerates clock skew between the machine that signs and the storage service.
_CLOCK_SKEW = timedelta(minutes=5)

Expiry = Union[timedelta, datetime]


def _expiry_time(expiry: Expiry, now: datetime) -> datetime:
    if isinstance(expiry, timedelta):
        if expiry <= timedelta(0):
            raise ValueError("the SAS expiry must be in the future")
        return now + expiry
    if expiry.tzinfo is None:
        raise ValueError("give the SAS expiry as an aware datetime (or a timedelta from now)")
    if expiry <= now:
        raise ValueError("the SAS expiry must be in the future")
    return expiry.astimezone(timezone.utc)


def container_sas_url(container: ContainerClient, expiry: Expiry = DEFAULT_SAS_EXPIRY) -> str:
    """The container's URL with a SAS that lets tasks write, read and list its blobs.

    The permissions are .NET's (add, create, list, read, write). The SAS is signed with the
    account key when the client has one (a connection string), and with a user delegation key
    when it signs in with an identity (Microsoft Entra ID; needs a role that may
    ``generateUserDelegationKey``, such as Storage Blob Data Contributor). A client that only
    holds a SAS cannot sign another one.
    """
    now = datetime.now(timezone.utc)
    expires = _expiry_time(expiry, now)
    start = now - _CLOCK_SKEW
    permission = ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True)
    credential: Any = container.credential
    signing: dict[str, Any]
    if getattr(credential, "account_key", None):
        signing = {"account_key": credential.account_key}
    elif hasattr(credential, "get_token"):
        parts = split_container_url(container.url)
        if parts is None:
            raise OutputStorageError(f"cannot tell the account of {container.url}")
        service = BlobServiceClient(parts[0], credential=credential)
        try:
            signing = {"user_delegation_key": service.get_user_delegation_key(start, expires)}
        finally:
            service.close()
    else:
        raise OutputStorageError("this storage client holds no key and no identity to sign a SAS with "
                                 "(it was made from a SAS URL): sign the SAS where the account key or identity is")
    token = generate_container_sas(container.account_name or "", container.container_name, permission=permission,
                                   expiry=expires, start=start, **signing)
    base = container.url.split("?", 1)[0]
    return f"{base}?{token}"
