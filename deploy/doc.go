// Package deploy holds the Kubernetes manifests (k8s/), the Dockerfiles (docker/), the
// Prometheus rules and Grafana dashboard (observability/) and the NATS operator
// permissions (nats/) of outboxtodo. Its one package, observability, embeds the rules
// and the dashboard and checks the metrics they name, for the services' tests to call
// with what each service registers. Its tests render every kustomize overlay (with and
// without the monitoring component), decode each object strictly into the Kubernetes
// and Prometheus Operator API types and check the result against the services' own
// configuration sources, load the alert rules as Prometheus does and check each one's
// runbook, and run the NATS permissions on a real server, so that a changed port, path,
// setting, command or metric breaks the build rather than a rollout or a page.
package deploy
