package store

import (
	"errors"
	"fmt"
	"testing"
)

func TestFailure(t *testing.T) {
	driver := errors.New("connection refused")
	err := fmt.Errorf("count: %w", Failure("reactions", fmt.Errorf("count reactions of good 1: %w", driver)))
	if !IsFailure(err) {
		t.Errorf("IsFailure(%v) = false; want true", err)
	}
	if !errors.Is(err, driver) {
		t.Errorf("errors.Is(%v, driver) = false; want the driver's error wrapped", err)
	}
	if got, want := err.Error(), "count: reactions: database: count reactions of good 1: connection refused"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	if IsFailure(driver) || IsFailure(nil) {
		t.Error("IsFailure of an unmarked error or nil = true; want false")
	}
}
