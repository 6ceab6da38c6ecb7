package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkIngestCluster measures the bridge (publisher -> Mosquitto ->
// bridge -> SHADOW, counted when stored) into the embedded single server,
// in process, and into a three-node cluster on loopback (deploy/nats/
// cluster.conf, SHADOW with 3 replicas, the bridge a network client of one
// node), alternating in each round on the same Mosquitto, and reports
// both rates and their ratio (medians over the rounds). All three nodes
// share this machine's cores with the bridge and Mosquitto, so the ratio
// is what replication costs in CPU and round trips, not what three hosts
// would do.
//
// Knobs: OTAWATCH_BENCH_MSGS (reports per phase, default 50000).
func BenchmarkIngestCluster(b *testing.B) {
	n := benchEnvInt(b, "OTAWATCH_BENCH_MSGS", 50000)
	m := testutil.StartMosquitto(b)
	single := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	cluster := testutil.StartCluster(b)
	nc, js := cluster.Connect(b, testutil.ClusterUserServices)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 3}); err != nil {
		b.Fatal(err)
	}
	clustered := &testutil.JetStream{NC: nc, JS: js}
	var singles, clusters, ratios []float64
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		b.StopTimer()
		msgs1, msgs3 := benchMsgs(b, "iot-2", 2*round, n), benchMsgs(b, "iot-2", 2*round+1, n)
		b.StartTimer()
		r1 := benchBridge(b, m.URL, single, 2*round, msgs1, DefaultMaxInFlight)
		r3 := benchBridge(b, m.URL, clustered, 2*round+1, msgs3, DefaultMaxInFlight)
		singles, clusters, ratios = append(singles, r1), append(clusters, r3), append(ratios, 100*r3/r1)
		b.Logf("round %d: bridge into one embedded server %.0f msg/s, into the three-node cluster (R3) %.0f msg/s, cluster/single %.1f%% (%d msgs of %d B)",
			round+1, r1, r3, 100*r3/r1, n, benchPayloadSize)
	}
	b.ReportMetric(median(singles), "single_msg/s")
	b.ReportMetric(median(clusters), "cluster_r3_msg/s")
	b.ReportMetric(median(ratios), "paired_cluster/single_%")
}
