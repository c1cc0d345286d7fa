package proctest

// Race reports whether the tests, and so the binary they run, are built
// with -race, which takes five to ten times the memory: a memory bound
// measured without it does not hold with it.
const Race = raceEnabled
