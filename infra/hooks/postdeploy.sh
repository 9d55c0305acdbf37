#!/bin/sh
# Event Grid validates an AzureFunction endpoint when the subscription is created: the function
# (index_blob_event) must already exist, which it does only after the first code deploy. So the
# first provision leaves the subscription out; after the deploy this hook turns it on and
# provisions once more. From then on every `azd provision` / `azd up` keeps it in place.
set -eu

if [ "$(azd env get-value EVENT_SUBSCRIPTION_ENABLED 2>/dev/null || true)" = "true" ]; then
    exit 0
fi

azd env set EVENT_SUBSCRIPTION_ENABLED true
# Functions are listed a little after a Flex deploy finishes; retry while they appear.
attempt=1
until azd provision --no-prompt; do
    if [ "$attempt" -ge 4 ]; then
        azd env set EVENT_SUBSCRIPTION_ENABLED false
        echo "Could not create the Event Grid subscription; run 'azd deploy' again to retry." >&2
        exit 1
    fi
    echo "Provisioning the Event Grid subscription failed (attempt $attempt); retrying in $((attempt * 30)) s." >&2
    sleep $((attempt * 30))
    attempt=$((attempt + 1))
done
