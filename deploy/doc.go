// Package deploy holds Dataport's deployment artefacts and the tests that
// check them without a container engine or a cluster: the Dockerfiles in
// docker/, the root compose.yaml and the kustomize tree in k8s/. The tests
// render every overlay with the kustomize Go API, decode each object strictly
// into the Kubernetes API types, load compose.yaml with the compose-spec
// library, and check the invariants operators rely on (probes, limits,
// non-root, network isolation, and every environment variable a service
// reads being set), deriving the variables from the services' source code.
package deploy
