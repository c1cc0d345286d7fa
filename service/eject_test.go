package service

import (
	"testing"
	"time"
)

func TestOutlierEjectsAfterConsecutiveTimeouts(t *testing.T) {
	var o outlier
	for i := range ejectAfter - 1 {
		if eject, _ := o.failure(); eject {
			t.Fatalf("ejected after %d timeouts; want %d in a row", i+1, ejectAfter)
		}
	}
	o.success() // an answer breaks the run
	for range ejectAfter - 1 {
		o.failure()
	}
	if o.ejected() {
		t.Fatal("ejected although an answer came between the timeouts")
	}
	eject, d := o.failure()
	if !eject || !o.ejected() || d != ejectBase {
		t.Fatalf("after %d timeouts in a row: eject=%v ejected()=%v for %v; want ejected for %v", ejectAfter, eject, o.ejected(), d, ejectBase)
	}
	// The back-off doubles with every failed probe, up to ejectMax.
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for _, w := range want {
		if d := o.probeFailed(); d != w {
			t.Fatalf("back-off after a failed probe = %v; want %v", d, w)
		}
	}
	o.readmit()
	if o.ejected() {
		t.Fatal("still ejected after readmit")
	}
	// Ejected again soon: the back-off goes on growing…
	for range ejectAfter {
		_, d = o.failure()
	}
	if d != ejectMax {
		t.Fatalf("re-ejection right after a readmission lasts %v; want %v", d, ejectMax)
	}
	// …until the instance has answered healAfterOKs calls in a row.
	o.readmit()
	for range healAfterOKs {
		o.success()
	}
	for range ejectAfter {
		_, d = o.failure()
	}
	if d != ejectBase {
		t.Fatalf("an ejection after %d answers in a row lasts %v; want %v again", healAfterOKs, d, ejectBase)
	}
}
