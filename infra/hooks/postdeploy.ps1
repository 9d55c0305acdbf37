# Create the Event Grid subscription once the function exists (see postdeploy.sh).
$ErrorActionPreference = 'Stop'

$enabled = azd env get-value EVENT_SUBSCRIPTION_ENABLED 2>$null
if ($LASTEXITCODE -eq 0 -and $enabled -eq 'true') {
    exit 0
}

azd env set EVENT_SUBSCRIPTION_ENABLED true
for ($attempt = 1; ; $attempt++) {
    azd provision --no-prompt
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge 4) {
        azd env set EVENT_SUBSCRIPTION_ENABLED false
        Write-Error "Could not create the Event Grid subscription; run 'azd deploy' again to retry."
        exit 1
    }
    Write-Warning "Provisioning the Event Grid subscription failed (attempt $attempt); retrying in $($attempt * 30) s."
    Start-Sleep -Seconds ($attempt * 30)
}
