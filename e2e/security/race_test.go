//go:build race

package security_test

func init() { raceEnabled = true }
