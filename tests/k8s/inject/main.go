// Command inject runs the pinned Dapr sidecar injector's own patch code on a pod, offline: it
// reads a Pod as JSON on stdin and writes the pod the injector would hand the API server, with
// the control plane configured as docs/10-kubernetes.md installs it (namespace dapr-system, mTLS
// on, the sidecar non-root with a read-only root filesystem, and all capabilities dropped unless
// -drop-all=false, the chart's default).
//
// tests/k8s builds it against the Dapr module that scripts/versions.env pins (see k8s_manifests.py).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"

	injectorConsts "github.com/dapr/dapr/pkg/injector/consts"
	"github.com/dapr/dapr/pkg/injector/patcher"
)

const (
	controlPlane  = "dapr-system"
	clusterDomain = "cluster.local"
)

func main() {
	namespace := flag.String("namespace", "eshop", "the pod's namespace")
	dropAll := flag.Bool("drop-all", true, "the chart's dapr_sidecar_injector.sidecarDropALLCapabilities")
	image := flag.String("image", "", "the chart's default sidecar image (an annotation overrides it)")
	flag.Parse()
	if err := run(*namespace, *dropAll, *image); err != nil {
		fmt.Fprintln(os.Stderr, "inject:", err)
		os.Exit(1)
	}
}

func run(namespace string, dropAll bool, image string) error {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	pod := &corev1.Pod{}
	if err = json.Unmarshal(raw, pod); err != nil {
		return err
	}

	// What pkg/injector/service/pod_patch.go sets from the injector's configuration.
	sidecar := patcher.NewSidecarConfig(pod)
	sidecar.Mode = injectorConsts.ModeKubernetes
	sidecar.Namespace = namespace
	sidecar.MTLSEnabled = true
	sidecar.Identity = namespace + ":" + pod.Spec.ServiceAccountName
	sidecar.ImagePullPolicy = corev1.PullIfNotPresent
	sidecar.OperatorAddress = patcher.ServiceAPI.Address(controlPlane, clusterDomain)
	sidecar.SentryAddress = patcher.ServiceSentry.Address(controlPlane, clusterDomain)
	sidecar.PlacementAddress = patcher.ServicePlacement.Address(controlPlane, clusterDomain)
	sidecar.RunAsNonRoot = true
	sidecar.ReadOnlyRootFilesystem = true
	sidecar.SidecarDropALLCapabilities = dropAll
	sidecar.ControlPlaneNamespace = controlPlane
	sidecar.ControlPlaneTrustDomain = clusterDomain
	sidecar.SentrySPIFFEID = "spiffe://" + clusterDomain + "/ns/" + controlPlane + "/dapr-sentry"
	sidecar.CurrentTrustAnchors = []byte("trust anchors")
	sidecar.KubeClusterDomain = clusterDomain
	sidecar.SchedulerEnabled = true
	sidecar.SidecarImage = image
	sidecar.SetFromPodAnnotations()

	patch, err := sidecar.GetPatch()
	if err != nil {
		return err
	}
	if len(patch) == 0 {
		_, err = os.Stdout.Write(raw)
		return err
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(patched)
	return err
}
