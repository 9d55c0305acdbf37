#!/bin/sh
# Generate TOKEN_SIGNING_KEY once per azd environment. Bicep stores it in Key Vault; keeping it
# in the environment means re-provisioning does not rotate it (a new key only invalidates the
# continuation tokens clients hold, but there is no reason to do that on every deployment).
set -eu

if [ -n "$(azd env get-value TOKEN_SIGNING_KEY 2>/dev/null || true)" ]; then
    exit 0
fi

if command -v python3 >/dev/null 2>&1; then
    key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
else
    key=$(openssl rand -base64 48 | tr -d '\n')
fi
azd env set TOKEN_SIGNING_KEY "$key"
echo "Generated TOKEN_SIGNING_KEY for this environment (stored in Key Vault by the deployment)."
