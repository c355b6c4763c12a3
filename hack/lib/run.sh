# Sourced by hack/run and hack/demo (from the repository's top directory): what both do before
# starting the agent.

# The agent flags that make registry.k8s.io and docker.io come from the local registry.
registry_mirrors=(--registry-mirror registry.k8s.io=http://127.0.0.1:5000
                  --registry-mirror docker.io=http://127.0.0.1:5000)

# prepare ROOT: packages, a release build, the demo images imported into state root ROOT.
prepare() {
  hack/setup
  hack/build --release
  hack/build-images --release --import "$1"
}

# The demo images, also served by a local registry on 127.0.0.1:5000 (hack/registry), which
# the agent uses as its mirror: manifests/etcd.yaml names its image as upstream does
# (registry.k8s.io/etcd:3.4.23). Stop it with `hack/registry stop`.
start_registry() {
  hack/registry start --port 5000
  hack/registry push --port 5000
}
