"""Where each step runs on Kubernetes: `dagster-k8s/config` op tags, the one place their values live.

Only the embedding step asks for a GPU (limit, toleration, node selector); every other step gets a small CPU
pod. The tags are inert under the local executors and read by k8s_job_executor in production.
"""

K8S_CONFIG_TAG = "dagster-k8s/config"

GPU_STEP_TAGS = {
    K8S_CONFIG_TAG: {
        "container_config": {
            "resources": {
                "requests": {"cpu": "2", "memory": "6Gi"},
                "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
            },
        },
        "pod_spec_config": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "node_selector": {"nvidia.com/gpu.present": "true"},
        },
    },
}

CPU_STEP_TAGS = {
    K8S_CONFIG_TAG: {
        "container_config": {
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
    },
}
