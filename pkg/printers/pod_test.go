package printers

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func running(name string, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Ready: ready, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func waiting(name, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func terminated(name, reason string, exitCode, signal int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: exitCode, Signal: signal}}}
}

// restarted records restarts, the last of which ended the given time ago.
func restarted(s corev1.ContainerStatus, count int32, lastEnded time.Duration) corev1.ContainerStatus {
	s.RestartCount = count
	s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{FinishedAt: ago(lastEnded)}
	return s
}

func containers(names ...string) []corev1.Container {
	var cs []corev1.Container
	for _, n := range names {
		cs = append(cs, corev1.Container{Name: n})
	}
	return cs
}

func sidecar(name string) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	return corev1.Container{Name: name, RestartPolicy: &always}
}

func condition(typ corev1.PodConditionType, status corev1.ConditionStatus) corev1.PodCondition {
	return corev1.PodCondition{Type: typ, Status: status}
}

func TestPodStatusCells(t *testing.T) {
	deleted := ago(time.Second)
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		// READY, STATUS and RESTARTS cells.
		want []any
	}{
		{
			name: "running pod counts ready running containers",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app", "proxy")}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running("app", true), running("proxy", false)},
			}},
			want: []any{"1/2", "Running", "0"},
		},
		{
			name: "pending pod without container statuses shows its phase",
			pod:  corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			want: []any{"0/1", "Pending", "0"},
		},
		{
			name: "status reason overrides phase",
			pod:  corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}},
			want: []any{"0/1", "Evicted", "0"},
		},
		{
			name: "scheduling gate shows SchedulingGated",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonSchedulingGated},
			}}},
			want: []any{"0/1", "SchedulingGated", "0"},
		},
		{
			name: "CrashLoopBackOff waiting reason with last restart age",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{restarted(waiting("app", "CrashLoopBackOff"), 4, 90*time.Second)},
			}},
			want: []any{"0/1", "CrashLoopBackOff", "4 (90s ago)"},
		},
		{
			name: "restarts without a recorded termination have no suffix",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "app", RestartCount: 2, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
			}},
			want: []any{"1/1", "Running", "2"},
		},
		{
			name: "restarts sum over containers and age from the latest",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("a", "b")}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{restarted(running("a", true), 1, time.Hour), restarted(running("b", true), 2, 3*time.Minute)},
			}},
			want: []any{"2/2", "Running", "3 (3m ago)"},
		},
		{
			name: "first container's reason wins",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("a", "b")}, Status: corev1.PodStatus{
				Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("a", "ImagePullBackOff"), waiting("b", "ErrImagePull")},
			}},
			want: []any{"0/2", "ImagePullBackOff", "0"},
		},
		{
			name: "succeeded pod shows Completed",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("job")}, Status: corev1.PodStatus{
				Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{terminated("job", "Completed", 0, 0)},
			}},
			want: []any{"0/1", "Completed", "0"},
		},
		{
			name: "terminated without reason shows the signal",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{terminated("app", "", 137, 9)},
			}},
			want: []any{"0/1", "Signal:9", "0"},
		},
		{
			name: "terminated without reason or signal shows the exit code",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{terminated("app", "", 2, 0)},
			}},
			want: []any{"0/1", "ExitCode:2", "0"},
		},
		{
			name: "Completed with a container still running is Running when the pod is ready",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("done", "serving")}, Status: corev1.PodStatus{
				Phase:             corev1.PodRunning,
				Conditions:        []corev1.PodCondition{condition(corev1.PodReady, corev1.ConditionTrue)},
				ContainerStatuses: []corev1.ContainerStatus{terminated("done", "Completed", 0, 0), running("serving", true)},
			}},
			want: []any{"1/2", "Running", "0"},
		},
		{
			name: "Completed with a container still running is NotReady when the pod is not ready",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: containers("done", "serving")}, Status: corev1.PodStatus{
				Phase:             corev1.PodRunning,
				Conditions:        []corev1.PodCondition{condition(corev1.PodReady, corev1.ConditionFalse)},
				ContainerStatuses: []corev1.ContainerStatus{terminated("done", "Completed", 0, 0), running("serving", true)},
			}},
			want: []any{"1/2", "NotReady", "0"},
		},
		{
			name: "init container running shows Init:done/total",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate", "seed", "warm"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase:                 corev1.PodPending,
				InitContainerStatuses: []corev1.ContainerStatus{terminated("migrate", "Completed", 0, 0), running("seed", false), waiting("warm", "PodInitializing")},
				ContainerStatuses:     []corev1.ContainerStatus{waiting("app", "PodInitializing")},
			}},
			want: []any{"0/1", "Init:1/3", "0"},
		},
		{
			name: "init container waiting on PodInitializing counts as not started",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{waiting("migrate", "PodInitializing")},
			}},
			want: []any{"0/1", "Init:0/1", "0"},
		},
		{
			name: "init container crash loop shows Init:CrashLoopBackOff and its restarts",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase:                 corev1.PodPending,
				InitContainerStatuses: []corev1.ContainerStatus{restarted(waiting("migrate", "CrashLoopBackOff"), 3, 20*time.Second)},
				ContainerStatuses:     []corev1.ContainerStatus{waiting("app", "PodInitializing")},
			}},
			want: []any{"0/1", "Init:CrashLoopBackOff", "3 (20s ago)"},
		},
		{
			name: "failed init container shows Init:reason",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodFailed, InitContainerStatuses: []corev1.ContainerStatus{terminated("migrate", "Error", 1, 0)},
			}},
			want: []any{"0/1", "Init:Error", "0"},
		},
		{
			name: "failed init container without reason shows Init:ExitCode",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{terminated("migrate", "", 3, 0)},
			}},
			want: []any{"0/1", "Init:ExitCode:3", "0"},
		},
		{
			name: "failed init container without reason shows Init:Signal",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{terminated("migrate", "", 143, 15)},
			}},
			want: []any{"0/1", "Init:Signal:15", "0"},
		},
		{
			name: "finished init containers' restarts no longer count",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase:                 corev1.PodRunning,
				InitContainerStatuses: []corev1.ContainerStatus{restarted(terminated("migrate", "Completed", 0, 0), 2, time.Hour)},
				ContainerStatuses:     []corev1.ContainerStatus{running("app", true)},
			}},
			want: []any{"1/1", "Running", "0"},
		},
		{
			name: "started sidecar counts towards READY and its restarts count",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{sidecar("mesh")}, Containers: containers("app")}, Status: corev1.PodStatus{
				Phase:                 corev1.PodRunning,
				InitContainerStatuses: []corev1.ContainerStatus{withStarted(restarted(running("mesh", true), 1, 2*time.Minute))},
				ContainerStatuses:     []corev1.ContainerStatus{running("app", true)},
			}},
			want: []any{"2/2", "Running", "1 (2m ago)"},
		},
		{
			name: "sidecar not yet started holds initialization",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{sidecar("mesh")}, Containers: containers("app")}, Status: corev1.PodStatus{
				Phase:                 corev1.PodPending,
				InitContainerStatuses: []corev1.ContainerStatus{running("mesh", false)},
				ContainerStatuses:     []corev1.ContainerStatus{waiting("app", "PodInitializing")},
			}},
			want: []any{"0/2", "Init:0/1", "0"},
		},
		{
			name: "initialized pod counts ready containers though an init status looks unfinished",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: containers("migrate"), Containers: containers("app")}, Status: corev1.PodStatus{
				Phase:                 corev1.PodRunning,
				Conditions:            []corev1.PodCondition{condition(corev1.PodInitialized, corev1.ConditionTrue)},
				InitContainerStatuses: []corev1.ContainerStatus{waiting("migrate", "")},
				ContainerStatuses:     []corev1.ContainerStatus{running("app", true)},
			}},
			want: []any{"1/1", "Init:0/1", "0"},
		},
		{
			name: "deleted running pod shows Terminating",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted}, Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running("app", true)},
			}},
			want: []any{"1/1", "Terminating", "0"},
		},
		{
			name: "deleted finished pod keeps its reason",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted}, Spec: corev1.PodSpec{Containers: containers("job")}, Status: corev1.PodStatus{
				Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{terminated("job", "Completed", 0, 0)},
			}},
			want: []any{"0/1", "Completed", "0"},
		},
		{
			name: "deleted pod on a lost node shows Unknown",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted}, Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, Reason: "NodeLost", ContainerStatuses: []corev1.ContainerStatus{running("app", true)},
			}},
			want: []any{"1/1", "Unknown", "0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.pod.Name = "web"
			assertCells(t, podCells(&tc.pod, testNow)[1:4], tc.want)
		})
	}
}

func withStarted(s corev1.ContainerStatus) corev1.ContainerStatus {
	started := true
	s.Started = &started
	return s
}

func TestPodWideCells(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want []any
	}{
		{
			name: "unscheduled pod shows none everywhere",
			pod:  corev1.Pod{ObjectMeta: objectMeta("web", 4*time.Hour), Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			want: []any{"web", "0/1", "Pending", "0", "4h", "<none>", "<none>", "<none>", "<none>"},
		},
		{
			name: "scheduled pod shows its first pod IP, node and nomination",
			pod: corev1.Pod{ObjectMeta: objectMeta("web", 4*time.Hour), Spec: corev1.PodSpec{Containers: containers("app"), NodeName: "node-1"}, Status: corev1.PodStatus{
				Phase: corev1.PodRunning, PodIP: "10.244.1.5", PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00::5"}}, NominatedNodeName: "node-2",
				ContainerStatuses: []corev1.ContainerStatus{running("app", true)},
			}},
			want: []any{"web", "1/1", "Running", "0", "4h", "10.244.1.5", "node-1", "node-2", "<none>"},
		},
		{
			name: "podIP alone is used when podIPs is unset",
			pod:  corev1.Pod{ObjectMeta: objectMeta("web", 4*time.Hour), Spec: corev1.PodSpec{Containers: containers("app")}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5"}},
			want: []any{"web", "0/1", "Running", "0", "4h", "10.244.1.5", "<none>", "<none>", "<none>"},
		},
		{
			name: "readiness gates count conditions that are true",
			pod: corev1.Pod{ObjectMeta: objectMeta("web", 4*time.Hour), Spec: corev1.PodSpec{
				Containers:     containers("app"),
				ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}, {ConditionType: "example.com/dns"}, {ConditionType: "example.com/missing"}},
			}, Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
				condition("example.com/lb", corev1.ConditionTrue), condition("example.com/dns", corev1.ConditionFalse),
			}}},
			want: []any{"web", "0/1", "Running", "0", "4h", "<none>", "<none>", "<none>", "1/3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertCells(t, podCells(&tc.pod, testNow), tc.want)
		})
	}
}

func TestPodRowConditions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		phase corev1.PodPhase
		want  []metav1.TableRowCondition
	}{
		{"succeeded pod row is marked completed", corev1.PodSucceeded, []metav1.TableRowCondition{
			{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: "Succeeded", Message: "The pod has completed successfully."},
		}},
		{"failed pod row is marked completed", corev1.PodFailed, []metav1.TableRowCondition{
			{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: "Failed", Message: "The pod failed."},
		}},
		{"running pod row has no conditions", corev1.PodRunning, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Status: corev1.PodStatus{Phase: tc.phase}}
			table, err := ForPods().ConvertToTable(context.Background(), pod, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := table.Rows[0].Conditions; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
