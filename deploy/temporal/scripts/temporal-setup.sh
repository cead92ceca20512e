#!/bin/sh
# One-shot job (temporalio/admin-tools image, or any image with the `temporal` CLI):
# wait for the Temporal frontend, create the application namespace if it is missing,
# then register durable-chat's custom search attributes. Safe to run again.
#
# Environment (the CLI's own variables): TEMPORAL_ADDRESS (host:port of the frontend),
# TEMPORAL_NAMESPACE (default "default"); TEMPORAL_NAMESPACE_RETENTION (default 168h)
# is used only when the namespace is created.
#
# The same text is embedded in deploy/temporal/k8s/temporal-setup-job.yaml;
# tests/test_deploy_files.py checks that the two copies are identical.
set -eu

NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-168h}"
echo "Temporal frontend: ${TEMPORAL_ADDRESS:-localhost:7233}, namespace: $NAMESPACE"

tries=0
until temporal operator cluster health >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 90 ]; then
        echo "Temporal did not become healthy in time" >&2
        exit 1
    fi
    sleep 2
done
echo "Temporal is serving"

if temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
else
    temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"
    echo "namespace $NAMESPACE created (retention $RETENTION)"
fi

# name type: the search attributes durable-chat's workflows upsert.
register() {
    name="$1"
    type="$2"
    if temporal operator search-attribute list --namespace "$NAMESPACE" | grep -qw "$name"; then
        echo "search attribute $name exists"
        return 0
    fi
    # A namespace that was just created can take a moment to accept registrations.
    attempt=0
    until temporal operator search-attribute create --namespace "$NAMESPACE" \
        --name "$name" --type "$type"; do
        attempt=$((attempt + 1))
        if [ "$attempt" -ge 10 ]; then
            echo "could not register search attribute $name" >&2
            exit 1
        fi
        sleep 3
    done
    echo "search attribute $name ($type) registered"
}

register ChatConversationId Keyword
register ChatUserId Keyword
register ChatStage Keyword
register ChatCacheHit Bool
echo "Temporal setup done"
