package simulator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
)

// report is a device's shadow report payload, the seed system's shape:
// {"state":{"reported":{"firmware":{...}}}}.
type report struct {
	State struct {
		Reported struct {
			Firmware events.Firmware `json:"firmware"`
		} `json:"reported"`
	} `json:"state"`
}

// encodeReport returns fw as a report payload.
func encodeReport(fw events.Firmware) []byte {
	var r report
	r.State.Reported.Firmware = fw
	b, err := json.Marshal(&r)
	if err != nil {
		// A Firmware of strings, a time and a float always marshals.
		panic("simulator: marshal report: " + err.Error())
	}
	return b
}

// Checksum is the checksum a simulated firmware image of version has:
// "sha256:" and the hex SHA-256 of a name derived from the version, so every
// device reports the same checksum for the same version.
func Checksum(version string) string {
	sum := sha256.Sum256([]byte("otawatch-simulated-firmware/" + version))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// bumpPatch returns the version after v (X.Y.Z -> X.Y.Z+1).
func bumpPatch(v string) (string, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return "", false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 || p == "" {
			return "", false
		}
		n[i] = x
	}
	return strconv.Itoa(n[0]) + "." + strconv.Itoa(n[1]) + "." + strconv.Itoa(n[2]+1), true
}

// durations draws install durations from a log-normal distribution with a
// given mean and standard deviation: install times are positive and skewed,
// a few devices taking much longer than most.
type durations struct {
	mu, sigma float64
}

func newDurations(mean, stddev time.Duration) durations {
	m, s := mean.Seconds(), stddev.Seconds()
	sigma2 := math.Log1p((s * s) / (m * m))
	return durations{mu: math.Log(m) - sigma2/2, sigma: math.Sqrt(sigma2)}
}

// draw returns one duration, at least a second, from two values of rng.
func (d durations) draw(rng *rand.Rand) time.Duration {
	x := math.Exp(d.mu + d.sigma*rng.NormFloat64())
	if x < 1 {
		x = 1
	}
	return time.Duration(x * float64(time.Second))
}

// seconds is d in whole seconds, as reports carry it, at least 1.
func seconds(d time.Duration) float64 {
	s := math.Round(d.Seconds())
	if s < 1 {
		s = 1
	}
	return s
}
