package rollout

import (
	"fmt"
	"sort"
	"strings"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// FleetView is what the orchestrator reads of the fleet: the fold of the
// SHADOW stream (*fleet.State implements it).
type FleetView interface {
	Device(typeID, deviceID string) (fleet.Device, bool)
	Devices(fn func(*fleet.Device))
	Metrics() fleet.Metrics
}

// ResolveDevices returns a spec's devices in their deterministic order: the
// explicit list as given (duplicates dropped), then every known device of
// DeviceType not already listed, by id. A bare id takes its type from the
// fleet (it must be unambiguous) or from DeviceType.
func ResolveDevices(spec events.RolloutSpec, fv FleetView) ([]events.DeviceRef, error) {
	var out []events.DeviceRef
	seen := map[events.DeviceRef]bool{}
	var byID map[string][]string // device id -> types, built on the first bare id
	for _, s := range spec.Devices {
		ref, err := events.ParseDeviceRef(s)
		if err != nil {
			return nil, err
		}
		if ref.TypeID == "" {
			if byID == nil {
				byID = map[string][]string{}
				fv.Devices(func(d *fleet.Device) { byID[d.DeviceID] = append(byID[d.DeviceID], d.TypeID) })
			}
			switch types := byID[ref.DeviceID]; {
			case spec.DeviceType != "":
				ref.TypeID = spec.DeviceType
			case len(types) == 1:
				ref.TypeID = types[0]
			case len(types) == 0:
				return nil, fmt.Errorf("device %q is unknown: name it as typeId/deviceId or give the device type", ref.DeviceID)
			default:
				sort.Strings(types)
				return nil, fmt.Errorf("device %q is ambiguous (types %s): name it as typeId/deviceId", ref.DeviceID, strings.Join(types, ", "))
			}
		}
		if !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
	}
	if spec.DeviceType != "" {
		var typed []events.DeviceRef
		fv.Devices(func(d *fleet.Device) {
			ref := events.DeviceRef{TypeID: d.TypeID, DeviceID: d.DeviceID}
			if d.TypeID == spec.DeviceType && !seen[ref] {
				typed = append(typed, ref)
			}
		})
		sort.Slice(typed, func(a, b int) bool { return typed[a].DeviceID < typed[b].DeviceID })
		out = append(out, typed...)
	}
	return out, nil
}

// SplitWaves splits devices, in order, into ceil(n/size) waves (size 0: no
// cap), at most maxWaves of them (0: no cap), of equal size with the first
// ones one larger when n does not divide.
func SplitWaves(devices []events.DeviceRef, maxWaves, size int) [][]events.DeviceRef {
	n := len(devices)
	if n == 0 {
		return nil
	}
	w := n // no caps: one device per wave is never what anyone means, but caps are always set
	if size > 0 {
		w = (n + size - 1) / size
	} else if maxWaves > 0 {
		w = maxWaves
	}
	if maxWaves > 0 && w > maxWaves {
		w = maxWaves
	}
	if w > n {
		w = n
	}
	out := make([][]events.DeviceRef, 0, w)
	base, extra := n/w, n%w
	i := 0
	for k := 0; k < w; k++ {
		sz := base
		if k < extra {
			sz++
		}
		out = append(out, devices[i:i+sz:i+sz])
		i += sz
	}
	return out
}
