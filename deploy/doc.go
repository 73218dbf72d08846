// Package deploy holds mysafe's deployment files: the container image
// (Dockerfile), a compose file with KurrentDB and Redis for local
// development, and Kubernetes manifests. It has no Go API; its tests check
// that the files parse, agree with each other and with mysafe's settings,
// and that the Dockerfile's build command compiles the server.
package deploy
