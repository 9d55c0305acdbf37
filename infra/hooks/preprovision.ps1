# Generate TOKEN_SIGNING_KEY once per azd environment (see preprovision.sh).
$ErrorActionPreference = 'Stop'

$existing = azd env get-value TOKEN_SIGNING_KEY 2>$null
if ($LASTEXITCODE -eq 0 -and $existing) {
    exit 0
}

$bytes = [byte[]]::new(48)
[System.Security.Cryptography.RandomNumberGenerator]::Fill($bytes)
$key = [Convert]::ToBase64String($bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_')
azd env set TOKEN_SIGNING_KEY $key
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Host 'Generated TOKEN_SIGNING_KEY for this environment (stored in Key Vault by the deployment).'
