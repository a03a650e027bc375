// Package deploy holds the Kubernetes manifests (k8s/) and the Dockerfiles (docker/)
// of outboxtodo. It has no code of its own: its tests render every kustomize overlay,
// decode each object strictly into the Kubernetes API types and check the result
// against the services' own configuration sources, so that a changed port, path or
// setting name breaks the build rather than a rollout.
package deploy
