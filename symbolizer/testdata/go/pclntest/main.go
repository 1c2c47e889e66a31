// pclntest is a small program whose shape the gopclntab tests know (symbolizer/tests/gopclntab.rs):
//
//   - main.mix is tiny and inlined everywhere; main.twice calls it and is itself inlined into
//     main.hot, so inside main.hot's loop one address has the frames mix, twice, hot;
//   - main.(*counter).Add is a method on a pointer receiver;
//   - main.makeAdder returns a closure (main.makeAdder.func1);
//   - main.Sum is generic (main.Sum[...]).
//
// It is only built, never run by the tests; running it prints a checksum.
package main

import (
	"fmt"
	"os"
)

// mix is inlined into every caller.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	return x ^ (x >> 29)
}

// twice is inlined into hot, carrying two inlined calls of mix with it.
func twice(x uint64) uint64 {
	return mix(mix(x) + 1)
}

//go:noinline
func hot(seed uint64, n int) uint64 {
	s := seed
	for i := 0; i < n; i++ {
		s = twice(s + uint64(i))
	}
	return s
}

type counter struct {
	n uint64
}

//go:noinline
func (c *counter) Add(v uint64) {
	c.n += mix(v)
}

// Number is what Sum adds up.
type Number interface {
	~int | ~uint64 | ~float64
}

//go:noinline
func Sum[T Number](xs []T) T {
	var s T
	for _, x := range xs {
		s += x
	}
	return s
}

//go:noinline
func makeAdder(k uint64) func(uint64) uint64 {
	return func(x uint64) uint64 {
		return x*k + mix(x)
	}
}

func main() {
	n := 1000
	if len(os.Args) > 1 {
		n = len(os.Args[1]) * 1000
	}
	c := &counter{}
	add := makeAdder(7)
	for i := 0; i < n; i++ {
		c.Add(hot(uint64(i), 100))
		c.n = add(c.n)
	}
	ints := []int{1, 2, 3, n}
	floats := []float64{0.5, 1.5, float64(n)}
	fmt.Println(c.n, Sum(ints), Sum(floats), Sum([]uint64{c.n, 1}))
}
