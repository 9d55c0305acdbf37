"""Checks on the deployment: the Bicep parses, agrees with the code, and holds no secret.

Pure Python and offline: the Bicep is read with tree-sitter-bicep, the registered functions are
read from ``function_app.py`` the way the Functions host reads them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_bicep

from shared.settings import DEFAULT_DEADLETTER_CONTAINER, SETTING_NAMES

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
API_BICEP = INFRA / "app" / "api.bicep"
SUBSCRIPTION_BICEP = INFRA / "app" / "eventgrid-subscription.bicep"
SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

#: Settings the code reads that the Bicep deliberately does not set, and why.
LOCAL_ONLY_SETTINGS: dict[str, str] = {
    "OUTPUTS_STORAGE": "a connection string for Azurite; in Azure the connection is "
    "identity-based (OUTPUTS_STORAGE__blobServiceUri, __credential, __clientId)",
    "INDEX_STORAGE": "a connection string for Azurite; in Azure the connection is "
    "identity-based (INDEX_STORAGE__tableServiceUri, __credential, __clientId)",
    "EVENTS_TOPIC_KEY": "in Azure the app publishes with its managed identity (EventGrid "
    "Data Sender on the topic); a topic key would be a secret in app settings",
}

#: Settings the Functions host (not our code) reads; the Bicep may set these besides ours.
HOST_SETTING_PATTERN = re.compile(r"^(AzureWebJobs\w*|APPLICATIONINSIGHTS_\w+|FUNCTIONS_\w+)$")

SUBJECT_PREFIX = "/blobServices/default/containers/job-"


# --- reading Bicep ------------------------------------------------------------------------------

_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


@cache
def parse(path: Path) -> tree_sitter.Tree:
    return _PARSER.parse(path.read_bytes())


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8")


def name_of(declaration: tree_sitter.Node) -> str:
    """The declared name of a param/var/output/resource/module declaration."""
    return next(text(c) for c in declaration.children if c.type == "identifier")


def value_of(declaration: tree_sitter.Node) -> tree_sitter.Node | None:
    """The node after ``=`` in a declaration (for a param: its default)."""
    children = declaration.children
    for i, child in enumerate(children):
        if child.type == "=" and i + 1 < len(children):
            return children[i + 1]
    return None


def string_literal(node: tree_sitter.Node | None) -> str | None:
    """The value of a plain string literal (no interpolation), else None."""
    if node is None or node.type != "string":
        return None
    if any(c.type == "interpolation" for c in node.children):
        return None
    return "".join(text(c) for c in node.children if c.type == "string_content")


def property_key(prop: tree_sitter.Node) -> str:
    key = prop.children[0]
    return string_literal(key) if key.type == "string" else text(key)  # type: ignore[return-value]


def object_properties(obj: tree_sitter.Node) -> dict[str, tree_sitter.Node]:
    assert obj.type == "object", f"expected an object literal, got {obj.type}: {text(obj)[:80]}"
    return {
        property_key(p): p.children[-1] for p in obj.children if p.type == "object_property"
    }


def declarations(path: Path, kind: str) -> dict[str, tree_sitter.Node]:
    """Top-level declarations of one kind (parameter/variable/output/resource/module)."""
    root = parse(path).root_node
    return {
        name_of(c): c for c in root.children if c.type == f"{kind}_declaration"
    }


def decorators_of(path: Path) -> dict[str, list[str]]:
    """Top-level declaration name -> decorator names (decorators precede their declaration)."""
    found: dict[str, list[str]] = {}
    pending: list[str] = []
    for child in parse(path).root_node.children:
        if child.type == "decorators":
            pending = [
                text(n.children[0]) for n in walk(child) if n.type == "call_expression"
                and n.parent is not None and n.parent.type == "decorator"
            ]
        elif child.type.endswith("_declaration"):
            found[name_of(child)] = pending
            pending = []
    return found


def resources(path: Path) -> Iterator[tuple[str, tree_sitter.Node]]:
    """Every resource declaration (nested ones too) as (type string, body object)."""
    for node in walk(parse(path).root_node):
        if node.type == "resource_declaration":
            type_string = next(c for c in node.children if c.type == "string")
            body = next((c for c in walk(node) if c.type == "object"), None)
            if body is not None:
                yield string_literal(type_string) or text(type_string), body


def object_at(obj: tree_sitter.Node, *keys: str) -> tree_sitter.Node:
    for key in keys:
        props = object_properties(obj)
        assert key in props, f"{key!r} missing in {text(obj)[:120]}"
        obj = props[key]
    return obj


def variable_keys(path: Path, variable: str) -> set[str]:
    value = value_of(declarations(path, "variable")[variable])
    assert value is not None
    return set(object_properties(value))


# --- Bicep is well-formed -----------------------------------------------------------------------


def test_the_azd_layout_is_complete() -> None:
    for relative in (
        "azure.yaml",
        "infra/main.bicep",
        "infra/main.parameters.json",
        "infra/abbreviations.json",
    ):
        assert (ROOT / relative).is_file(), f"{relative} is missing"
    assert len(list((INFRA / "app").glob("*.bicep"))) >= 5


@pytest.mark.parametrize("path", BICEP_FILES, ids=[str(p.relative_to(INFRA)) for p in BICEP_FILES])
def test_bicep_parses_without_errors(path: Path) -> None:
    root = parse(path).root_node
    problems = [
        f"{'MISSING' if n.is_missing else 'ERROR'} at line {n.start_point[0] + 1}: "
        f"{text(n)[:60]!r}"
        for n in walk(root)
        if n.type == "ERROR" or n.is_missing
    ]
    assert not root.has_error and not problems, "\n".join(problems)


def test_every_module_path_exists() -> None:
    for path in BICEP_FILES:
        for name, module in declarations(path, "module").items():
            target = string_literal(next(c for c in module.children if c.type == "string"))
            assert target is not None
            assert (path.parent / target).is_file(), f"{path.name}: module {name} -> {target}"


def undefined_symbols(path: Path) -> list[str]:
    """Identifiers used in expressions that nothing in the file declares (typos, stale names)."""
    root = parse(path).root_node
    declared: set[str] = set()
    for node in walk(root):
        if node.type.endswith("_declaration"):
            names = [c for c in node.children if c.type == "identifier"]
            if names:
                declared.add(text(names[0]))
        elif node.type in ("loop_variable", "loop_enumerator"):
            declared.add(text(node))
        elif node.type == "for_statement":
            kids = node.children
            declared |= {text(kids[i + 1]) for i, c in enumerate(kids[:-1])
                         if c.type == "for" and kids[i + 1].type == "identifier"}
        elif node.type == "lambda_expression":
            declared.add(text(node.children[0]))
    undefined = []
    for node in walk(root):
        parent = node.parent
        if node.type != "identifier" or parent is None:
            continue
        if parent.type.endswith("_declaration") and next(
            c for c in parent.children if c.type == "identifier"
        ) == node:
            continue  # the name being declared
        if parent.type in ("object_property", "call_expression") and parent.children[0] == node:
            continue  # a property key or a function name
        if parent.type == "resource_expression" and parent.children[0] != node:
            continue  # nested resource after '::'
        if text(node) not in declared:
            undefined.append(f"{text(node)} (line {node.start_point[0] + 1})")
    return undefined


@pytest.mark.parametrize("path", BICEP_FILES, ids=[str(p.relative_to(INFRA)) for p in BICEP_FILES])
def test_every_symbol_used_is_declared(path: Path) -> None:
    assert undefined_symbols(path) == []


def test_modules_are_called_with_the_parameters_they_declare() -> None:
    for path in BICEP_FILES:
        for name, module in declarations(path, "module").items():
            target = path.parent / string_literal(next(c for c in module.children if c.type == "string"))  # type: ignore[operator]
            body = next(c for c in walk(module) if c.type == "object")
            passed = set(object_properties(object_at(body, "params")))
            declared = declarations(target, "parameter")
            required = {n for n, d in declared.items() if value_of(d) is None}
            assert passed <= set(declared), f"{path.name}: module {name} passes unknown {passed - set(declared)}"
            assert required <= passed, f"{path.name}: module {name} misses {required - passed}"


def test_parameters_file_names_only_main_bicep_parameters() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    declared = set(declarations(MAIN_BICEP, "parameter"))
    assert set(parameters["parameters"]) <= declared
    # Required parameters (no default) must come from the azd environment.
    required = {n for n, d in declarations(MAIN_BICEP, "parameter").items() if value_of(d) is None}
    assert required <= set(parameters["parameters"])


def test_azure_yaml_deploys_the_root_as_a_python_function_app() -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    service = re.search(r"^services:\n  api:\n((?:    .*\n)+)", azure_yaml, re.MULTILINE)
    assert service, "azure.yaml has no service named api"
    assert set(service.group(1).split("\n")) >= {
        "    project: .", "    language: python", "    host: function",
    }
    hooks = re.findall(r"^\s+run: (\S+)$", azure_yaml, re.MULTILINE)
    assert len(hooks) == 4
    for script in hooks:
        assert (ROOT / script).is_file(), script
    assert variable_keys(MAIN_BICEP, "tags") == {"azd-env-name"}
    assert "'azd-service-name': serviceName" in API_BICEP.read_text(encoding="utf-8")


def test_outputs_are_upper_snake() -> None:
    outputs = declarations(MAIN_BICEP, "output")
    assert outputs
    assert [n for n in outputs if not re.fullmatch(r"[A-Z][A-Z0-9_]*", n)] == []


# --- settings agree: Bicep, local.settings.sample.json, shared.settings -------------------------


def bicep_app_settings() -> set[str]:
    return variable_keys(MAIN_BICEP, "appSettings")


def bicep_host_settings() -> set[str]:
    return variable_keys(API_BICEP, "hostSettings")


def test_app_settings_resource_is_exactly_host_plus_app_settings() -> None:
    config = [
        body for kind, body in resources(API_BICEP) if kind.startswith("Microsoft.Web/sites/config@")
    ]
    assert len(config) == 1
    assert string_literal(object_properties(config[0])["name"]) == "appsettings"
    assert text(object_properties(config[0])["properties"]) == "union(hostSettings, appSettings)"
    main_api = declarations(MAIN_BICEP, "module")["api"]
    params = object_at(value_of(main_api), "params")  # type: ignore[arg-type]
    assert text(object_properties(params)["appSettings"]) == "appSettings"
    # Nothing else sets settings behind the test's back.
    for path in BICEP_FILES:
        for node in walk(parse(path).root_node):
            if node.type == "object_property" and property_key(node) == "appSettings":
                assert path in (MAIN_BICEP, API_BICEP), f"{path.name} sets appSettings"


def test_bicep_sets_every_setting_the_code_reads_except_the_documented_local_ones() -> None:
    code = set(SETTING_NAMES)
    assert set(LOCAL_ONLY_SETTINGS) <= code, "LOCAL_ONLY_SETTINGS names a setting the code no longer reads"
    missing = code - bicep_app_settings() - set(LOCAL_ONLY_SETTINGS)
    assert not missing, f"read by the code but not set by the Bicep: {sorted(missing)}"


def test_bicep_sets_nothing_the_code_does_not_read() -> None:
    extra = bicep_app_settings() - set(SETTING_NAMES)
    assert not extra, f"set by the Bicep but never read by the code: {sorted(extra)}"
    local_but_set = bicep_app_settings() & set(LOCAL_ONLY_SETTINGS)
    assert not local_but_set, f"documented local-only but set by the Bicep: {sorted(local_but_set)}"
    not_host = {n for n in bicep_host_settings() if not HOST_SETTING_PATTERN.match(n)}
    assert not not_host, f"host settings that are not host settings: {sorted(not_host)}"


def test_identity_based_connections_in_azure() -> None:
    main = MAIN_BICEP.read_text(encoding="utf-8")
    for connection in ("OUTPUTS_STORAGE", "INDEX_STORAGE"):
        assert f"{connection}__credential: 'managedidentity'" in main
        assert f"{connection}__clientId: identity.outputs.clientId" in main
    api = API_BICEP.read_text(encoding="utf-8")
    assert "AzureWebJobsStorage__credential: 'managedidentity'" in api
    assert "AzureWebJobsStorage__clientId: identityClientId" in api
    assert "Authorization=AAD" in api


def test_sample_local_settings_list_exactly_the_settings_the_code_reads() -> None:
    values = json.loads(SAMPLE_SETTINGS.read_text(encoding="utf-8"))["Values"]
    ours = {n for n in values if not HOST_SETTING_PATTERN.match(n)}
    assert ours == set(SETTING_NAMES)


# --- the Event Grid subscription targets a registered Event Grid trigger ------------------------


def subscription_target_function() -> str:
    """The function name the subscription module is deployed with (main.bicep or the default)."""
    modules = declarations(MAIN_BICEP, "module")
    module = next(
        m for m in modules.values()
        if string_literal(next(c for c in m.children if c.type == "string"))
        == "app/eventgrid-subscription.bicep"
    )
    body = next(c for c in walk(module) if c.type == "object")
    passed = object_properties(object_at(body, "params")).get("functionName")
    if passed is not None:
        name = string_literal(passed)
        assert name, "pass functionName as a literal so it can be checked"
        return name
    default = string_literal(value_of(declarations(SUBSCRIPTION_BICEP, "parameter")["functionName"]))
    assert default
    return default


def registered_functions() -> dict[str, str | None]:
    """Function name -> trigger type, read from function_app.py as the Functions host does.

    Imported in a fresh interpreter with the sample app settings in the environment (the host
    loads app settings before importing the script), so nothing leaks into this test process.
    """
    assert (ROOT / "function_app.py").is_file(), "function_app.py (the app the host loads) is missing"
    values = json.loads(SAMPLE_SETTINGS.read_text(encoding="utf-8"))["Values"]
    env = {**{k: str(v) for k, v in values.items()}, **os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    script = (
        "import json, function_app\n"
        "out = {}\n"
        "for f in function_app.app.get_functions():\n"
        "    t = f.get_trigger()\n"
        "    out[f.get_function_name()] = t.get_dict_repr()['type'] if t else None\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"importing function_app failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_subscription_targets_a_registered_event_grid_trigger() -> None:
    target = subscription_target_function()
    functions = registered_functions()
    assert target in functions, f"{target} is not among the registered functions {sorted(functions)}"
    assert functions[target] == "eventGridTrigger"


def test_subscription_endpoint_filter_retry_and_dead_letter() -> None:
    (kind, body), = [(k, b) for k, b in resources(SUBSCRIPTION_BICEP) if "eventSubscriptions@" in k]
    assert kind.startswith("Microsoft.EventGrid/systemTopics/eventSubscriptions@")
    props = object_at(body, "properties")
    destination = object_at(props, "destination")
    assert string_literal(object_at(destination, "endpointType")) == "AzureFunction"
    endpoint = object_at(destination, "properties")
    assert text(object_at(endpoint, "resourceId")) == "'${functionAppId}/functions/${functionName}'"
    # Batches go to the trigger, whose concurrent invocations commit together (group commit).
    assert text(object_at(endpoint, "maxEventsPerBatch")) == "100"
    assert text(object_at(endpoint, "preferredBatchSizeInKilobytes")) == "128"

    event_filter = object_at(props, "filter")
    types = {string_literal(n) for n in object_at(event_filter, "includedEventTypes").children
             if n.type == "string"}
    assert types == {"Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted", "Microsoft.Storage.BlobRenamed",
                     "Microsoft.Storage.DirectoryRenamed", "Microsoft.Storage.DirectoryDeleted"}
    assert string_literal(object_at(event_filter, "subjectBeginsWith")) == SUBJECT_PREFIX

    retry = object_at(props, "retryPolicy")
    assert set(object_properties(retry)) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    dead_letter = object_at(props, "deadLetterWithResourceIdentity")
    assert string_literal(object_at(dead_letter, "identity", "type")) == "SystemAssigned"
    assert string_literal(object_at(dead_letter, "deadLetterDestination", "endpointType")) == "StorageBlob"
    assert "deadLetterDestination" not in object_properties(props), "dead-letter with identity, not a key"


def test_the_app_replays_the_container_the_subscription_dead_letters_to() -> None:
    settings = object_properties(value_of(declarations(MAIN_BICEP, "variable")["appSettings"]))  # type: ignore[arg-type]
    container = text(settings["DEADLETTER_CONTAINER"])
    assert container == "storage.outputs.deadLetterContainerName"
    main = MAIN_BICEP.read_text(encoding="utf-8")
    assert f"deadLetterContainerName: {container}" in main  # what the subscription module is given
    assert "deadLetterStorageAccountId: storage.outputs.id" in main  # in the index account ...
    assert text(settings["INDEX_STORAGE__tableServiceUri"]) == "storage.outputs.tableEndpoint"
    assert text(settings["INDEX_STORAGE__blobServiceUri"]) == "storage.outputs.blobEndpoint"  # ... reached so
    # The setting's default is the container the Bicep creates.
    default = string_literal(value_of(declarations(MAIN_BICEP, "variable")["deadLetterContainerName"]))
    assert default == DEFAULT_DEADLETTER_CONTAINER


def test_system_topic_has_an_identity_and_role_on_the_dead_letter_container() -> None:
    (_, topic), = [(k, b) for k, b in resources(INFRA / "app" / "outputs-access.bicep")
                   if k.startswith("Microsoft.EventGrid/systemTopics@")]
    assert string_literal(object_at(topic, "identity", "type")) == "SystemAssigned"
    assert string_literal(object_at(topic, "properties", "topicType")) == "Microsoft.Storage.StorageAccounts"
    rbac = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
    assert "scope: storage::blobServices::deadLetterContainer" in rbac
    assert "principalId: systemTopicPrincipalId" in rbac


# --- security: no keys, no secrets --------------------------------------------------------------


INFRA_TEXT_FILES = [*sorted(p for p in INFRA.rglob("*") if p.is_file()), ROOT / "azure.yaml"]


@pytest.mark.parametrize("path", INFRA_TEXT_FILES, ids=[p.name for p in INFRA_TEXT_FILES])
def test_no_account_keys_or_list_functions(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    for forbidden in (r"\blist[A-Z]\w*\s*\(", r"AccountKey\s*=", r"SharedAccessKey\s*=",
                      r"DefaultEndpointsProtocol", r"SharedAccessSignature"):
        assert not re.search(forbidden, source), f"{path.name} matches {forbidden}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=[str(p.relative_to(INFRA)) for p in BICEP_FILES])
def test_no_output_carries_a_secret(path: Path) -> None:
    decorators = decorators_of(path)
    secure_params = {n for n in declarations(path, "parameter") if "secure" in decorators.get(n, [])}
    for name, output in declarations(path, "output").items():
        assert "secure" not in decorators.get(name, []), f"{path.name}: secure output {name}"
        assert not re.search(r"(?i)password|secret|connectionstring|accountkey|sas", name), name
        used = {text(n) for n in walk(output) if n.type == "identifier"}
        assert not used & secure_params, f"{path.name}: output {name} exposes {used & secure_params}"


def test_token_signing_key_is_a_secure_parameter_stored_in_key_vault() -> None:
    assert "secure" in decorators_of(MAIN_BICEP)["tokenSigningKey"]
    assert "secure" in decorators_of(INFRA / "app" / "keyvault.bicep")["tokenSigningKey"]
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert re.fullmatch(r"\$\{[A-Z_]+\}", parameters["parameters"]["tokenSigningKey"]["value"])
    main = MAIN_BICEP.read_text(encoding="utf-8")
    assert "TOKEN_SIGNING_KEY: keyVault.outputs.tokenSigningKeyReference" in main
    assert "@Microsoft.KeyVault(" in (INFRA / "app" / "keyvault.bicep").read_text(encoding="utf-8")


def test_storage_accounts_refuse_shared_keys_and_public_blobs() -> None:
    accounts = [
        (path, body) for path in BICEP_FILES for kind, body in resources(path)
        if kind.startswith("Microsoft.Storage/storageAccounts@")
        and "existing" not in text(body.parent)[: text(body.parent).find("{")]
    ]
    assert len(accounts) == 2  # app storage and the optional new outputs account
    for path, body in accounts:
        props = object_at(body, "properties")
        assert text(object_at(props, "allowSharedKeyAccess")) == "false", path.name
        assert text(object_at(props, "allowBlobPublicAccess")) == "false", path.name


def test_application_insights_accepts_only_entra_tokens() -> None:
    (_, body), = [(k, b) for k, b in resources(INFRA / "app" / "monitoring.bicep")
                  if k.startswith("Microsoft.Insights/components@")]
    assert text(object_at(body, "properties", "DisableLocalAuth")) == "true"


def test_function_app_is_flex_consumption_python_with_a_user_assigned_identity() -> None:
    kinds = {k.split("@")[0]: b for k, b in resources(API_BICEP)}
    plan = kinds["Microsoft.Web/serverfarms"]
    assert string_literal(object_at(plan, "sku", "name")) == "FC1"
    site = kinds["Microsoft.Web/sites"]
    assert string_literal(object_at(site, "identity", "type")) == "UserAssigned"
    config = object_at(site, "properties", "functionAppConfig")
    assert string_literal(object_at(config, "runtime", "name")) == "python"
    auth = object_at(config, "deployment", "storage", "authentication")
    assert string_literal(object_at(auth, "type")) == "UserAssignedIdentity"


def test_role_assignments_use_built_in_ids_and_guid_names() -> None:
    assignments = [
        (path, body) for path in BICEP_FILES for kind, body in resources(path)
        if kind.startswith("Microsoft.Authorization/roleAssignments@")
    ]
    assert len(assignments) >= 8
    for path, body in assignments:
        assert text(object_at(body, "name")).startswith("guid("), path.name
        role = text(object_at(body, "properties", "roleDefinitionId"))
        assert role.startswith("subscriptionResourceId('Microsoft.Authorization/roleDefinitions'"), path.name
    role_ids = set()
    for path in BICEP_FILES:
        role_ids |= set(re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'",
                                   path.read_text(encoding="utf-8")))
    expected = {
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",  # Storage Blob Data Reader (outputs)
        "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",  # Storage Blob Delegator (outputs, SAS)
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor (index)
        "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor (per container)
        "4633458b-17de-408a-b874-0445c86b69e6",  # Key Vault Secrets User
        "d5a91429-5739-47e2-a06b-3470a27159e7",  # EventGrid Data Sender (quota events)
    }
    assert expected <= role_ids
    # Least privilege: no Owner role, nor a queue role (no function uses queues).
    assert not role_ids & {"b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "974c5e8b-45b9-4653-ba55-5f855dd0fb88"}


# --- hardened by default (issue 23) ---------------------------------------------------------------


def test_the_apps_blob_role_is_scoped_to_its_containers() -> None:
    rbac = INFRA / "app" / "rbac.bicep"
    (_, body), = [(k, b) for k, b in resources(rbac) if k.startswith("Microsoft.Authorization/roleAssignments@")
                  and "appContainers[i]" in text(b)]
    assert text(object_at(body, "scope")) == "appContainers[i]"
    main = MAIN_BICEP.read_text(encoding="utf-8")
    assert ("appContainerNames: concat([storage.outputs.deploymentContainerName, storage.outputs.deadLetterContainerName], "
            "storage.outputs.hostContainerNames)") in main
    storage = (INFRA / "app" / "storage.bicep").read_text(encoding="utf-8")
    assert "name: 'azure-webjobs-hosts'" in storage and "name: 'azure-webjobs-secrets'" in storage
    # Every blob data role on the app account is on a container (the table role stays on the account).
    for kind, body in resources(rbac):
        if kind.startswith("Microsoft.Authorization/roleAssignments@") and "storageBlobData" in text(body):
            assert text(object_at(body, "scope")) in ("appContainers[i]", "storage::blobServices::deadLetterContainer")


def storage_account_bodies() -> dict[str, tree_sitter.Node]:
    return {path.name: body for path in BICEP_FILES for kind, body in resources(path)
            if kind.startswith("Microsoft.Storage/storageAccounts@") and "existing" not in text(body.parent)[: text(body.parent).find("{")]}


def test_storage_is_zone_redundant_and_closed_to_the_public_with_vnet() -> None:
    accounts = storage_account_bodies()
    assert set(accounts) == {"storage.bicep", "outputs-storage.bicep"}
    for name, body in accounts.items():
        assert text(object_at(body, "sku", "name")) == "skuName", name
        assert string_literal(value_of(declarations(INFRA / "app" / name, "parameter")["skuName"])) == "Standard_ZRS"
        props = object_at(body, "properties")
        assert text(object_at(props, "publicNetworkAccess")).startswith("vnetEnabled"), name
        assert text(object_at(props, "networkAcls", "defaultAction")).startswith("vnetEnabled"), name
    assert string_literal(value_of(declarations(MAIN_BICEP, "parameter")["storageSku"])) == "Standard_ZRS"
    assert text(value_of(declarations(MAIN_BICEP, "parameter")["outputsStoragePublicNetworkAccess"])) == "false"


def test_key_vault_keeps_deleted_secrets_90_days_and_closes_with_vnet() -> None:
    (_, vault), = [(k, b) for k, b in resources(INFRA / "app" / "keyvault.bicep") if k.startswith("Microsoft.KeyVault/vaults@")]
    props = object_at(vault, "properties")
    assert text(object_at(props, "enablePurgeProtection")) == "true"
    assert text(object_at(props, "softDeleteRetentionInDays")) == "90"
    assert text(object_at(props, "enableRbacAuthorization")) == "true"
    assert text(object_at(props, "publicNetworkAccess")) == "vnetEnabled ? 'Disabled' : 'Enabled'"
    assert text(object_at(props, "networkAcls", "defaultAction")) == "vnetEnabled ? 'Deny' : 'Allow'"


def diagnostic_settings() -> dict[str, list[tuple[str, str]]]:
    """scope expression -> (file, logged categories) of every diagnostic setting."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in BICEP_FILES:
        for kind, body in resources(path):
            if kind.startswith("Microsoft.Insights/diagnosticSettings@"):
                props = object_at(body, "properties")
                assert text(object_at(props, "workspaceId")) == "logAnalyticsWorkspaceId", path.name
                logs = text(object_at(props, "logs"))
                found.setdefault(text(object_at(body, "scope")), []).append((path.name, logs))
    return found


def test_diagnostic_settings_send_storage_key_vault_and_event_grid_logs_to_log_analytics() -> None:
    found = diagnostic_settings()
    for scope, where in (("storage::blobServices", "storage.bicep"), ("storage::tableServices", "storage.bicep"),
                         ("outputsBlobServices", "outputs-access.bicep")):
        (file, logs), = found[scope]
        assert file == where and all(c in logs for c in ("StorageRead", "StorageWrite", "StorageDelete")), scope
    (file, logs), = found["vault"]
    assert file == "keyvault.bicep" and "categoryGroup: 'audit'" in logs
    (file, logs), = found["systemTopic"]
    assert file == "outputs-access.bicep" and "DeliveryFailures" in logs
    main = MAIN_BICEP.read_text(encoding="utf-8")
    assert main.count("logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId") == 3


def test_keys_by_role_and_entra_come_from_parameters() -> None:
    settings = object_properties(value_of(declarations(MAIN_BICEP, "variable")["appSettings"]))  # type: ignore[arg-type]
    assert text(settings["API_KEYS"]) == "keyVault.outputs.apiKeysReference"
    assert text(settings["READ_KEYS"]) == "keyVault.outputs.readKeysReference"
    assert text(settings["EVENTS_KEYS"]) == "keyVault.outputs.eventsKeysReference"
    assert text(settings["ENTRA_AUDIENCE"]) == "entraAudience"
    assert "tenant().tenantId" in text(settings["ENTRA_TENANT_ID"])
    decorators = decorators_of(MAIN_BICEP)
    for secret in ("apiKeys", "readKeys", "eventsKeys"):
        assert "secure" in decorators[secret], secret
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert {"apiKeys", "readKeys", "entraAudience", "entraTenantId", "storageSku"} <= set(parameters)


def test_checkov_runs_in_make_lint_and_every_skip_has_its_reason() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^lint: .*\bcheckov\b", makefile, re.MULTILINE)
    assert "--config-file infra/.checkov.yaml" in makefile and "devtools/checkov_gate.py" in makefile
    assert re.search(r"^checkov==\d+\.\d+\.\d+$", (ROOT / "requirements-checkov.txt").read_text(encoding="utf-8"), re.MULTILINE)
    lines = (INFRA / ".checkov.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("skip-check:")
    skipped, reason = [], ""
    for line in lines[start + 1:]:
        stripped = line.strip()
        if stripped.startswith("- "):
            assert reason, f"{stripped} has no reason above it"
            skipped.append(stripped[2:])
        elif stripped.startswith("#") and not stripped.startswith("# ---"):
            reason = stripped
        elif stripped.startswith("# ---"):
            reason = ""
    assert skipped and all(re.fullmatch(r"CKV_AZURE_\d+", s) for s in skipped)
    assert len(skipped) == len(set(skipped))
    # The one place: no inline suppression in the Bicep.
    for path in BICEP_FILES:
        assert "checkov:skip" not in path.read_text(encoding="utf-8"), path.name


# --- the deployment package ---------------------------------------------------------------------


def funcignore_patterns() -> list[str]:
    lines = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str) -> bool:
    """gitignore-style matching, which is what .funcignore uses (negations not supported)."""
    parts = relative.split("/")
    for pattern in funcignore_patterns():
        assert not pattern.startswith("!"), "negated .funcignore patterns are not modelled here"
        bare = pattern.strip("/")
        if "/" in bare:
            if fnmatch.fnmatch(relative, bare) or relative.startswith(bare + "/"):
                return True
        elif any(fnmatch.fnmatch(part, bare) for part in parts[: -1 if pattern.endswith("/") else None]):
            return True
    return False


@pytest.mark.parametrize("relative", [
    "tests/unit/test_infra.py", ".venv/lib/python3.11/site-packages/x.py", "local.settings.json",
    ".venv-checkov/lib/python3.11/site-packages/checkov/main.py", "requirements-checkov.txt",
    "infra/main.bicep", "azurite-data/__blobstorage__/x",
])
def test_funcignore_keeps_dev_files_out_of_the_package(relative: str) -> None:
    assert ignored(relative)


@pytest.mark.parametrize("relative", [
    "function_app.py", "host.json", "requirements.txt", "shared/settings.py", "functions/__init__.py",
])
def test_funcignore_keeps_the_app_in_the_package(relative: str) -> None:
    assert not ignored(relative)
