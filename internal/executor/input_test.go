package executor

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// inputErr returns err as an *InputError, failing the test when it is
// another kind of error.
func inputErr(t *testing.T, call string, err error) *InputError {
	t.Helper()
	var ie *InputError
	if !errors.As(err, &ie) {
		t.Fatalf("%s = %v (%T), want an *InputError", call, err, err)
	}
	return ie
}

func TestCheckCode(t *testing.T) {
	tests := []struct {
		name    string
		code    string
		wantErr *InputError // nil: valid
	}{
		{name: "one line", code: "print(1)"},
		{name: "unicode", code: "print('héllo, 世界 🐍')"},
		{name: "exactly the limit", code: strings.Repeat("#", MaxCodeBytes)},
		{name: "surrounding whitespace", code: "\n\n  print(1)\n\n"},
		{name: "empty", code: "", wantErr: &InputError{"code", "code is empty"}},
		{name: "whitespace only", code: " \n\t\r\n ", wantErr: &InputError{"code", "code is empty"}},
		{name: "invalid UTF-8", code: "print('\xff\xfe')", wantErr: &InputError{"code", "code is not valid UTF-8"}},
		{name: "lone continuation byte", code: "x = 1\n\x80", wantErr: &InputError{"code", "code is not valid UTF-8"}},
		{name: "NUL byte", code: "print(1)\x00", wantErr: &InputError{"code", "code contains a NUL byte"}},
		{name: "NUL inside a string", code: "s = 'a\x00b'", wantErr: &InputError{"code", "code contains a NUL byte"}},
		{
			name:    "one byte over the limit",
			code:    strings.Repeat("#", MaxCodeBytes+1),
			wantErr: &InputError{"code", "code is 1048577 bytes, over the limit of 1048576"},
		},
		{
			// The size is checked first, so a huge body is refused
			// without scanning it.
			name:    "over the limit and invalid UTF-8",
			code:    strings.Repeat("\xff", 2*MaxCodeBytes),
			wantErr: &InputError{"code", "code is 2097152 bytes, over the limit of 1048576"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCode(tc.code, MaxCodeBytes)
			call := "CheckCode(" + abbrev(tc.code) + ")"
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("%s = %v, want nil", call, err)
				}
				return
			}
			if diff := cmp.Diff(tc.wantErr, inputErr(t, call, err)); diff != "" {
				t.Errorf("%s error (-want +got):\n%s", call, diff)
			}
		})
	}
}

// TestCheckCodeMax checks that the limit passed in, not the default, is
// the one enforced.
func TestCheckCodeMax(t *testing.T) {
	if err := CheckCode("print(1)", 8); err != nil {
		t.Errorf("CheckCode(%q, 8) = %v, want nil", "print(1)", err)
	}
	err := CheckCode("print(12)", 8)
	want := &InputError{"code", "code is 9 bytes, over the limit of 8"}
	if diff := cmp.Diff(want, inputErr(t, "CheckCode(print(12), 8)", err)); diff != "" {
		t.Errorf("CheckCode(%q, 8) error (-want +got):\n%s", "print(12)", diff)
	}
}

func TestCheckPath(t *testing.T) {
	long := strings.Repeat("a", 255)
	tests := []struct {
		name    string
		path    string
		wantErr string // substring of the message; "" means valid
	}{
		{name: "file", path: "data.csv"},
		{name: "nested", path: "in/2024/data.csv"},
		{name: "dots inside names", path: "..hidden/a..b/.c"},
		{name: "unicode", path: "données/été.csv"},
		{name: "spaces", path: "my file.txt"},
		{name: "element of 255 bytes", path: long},
		{name: "exactly 1024 bytes", path: strings.Repeat("abc/", 255) + "abcd"},
		{name: "empty", path: "", wantErr: "empty"},
		{name: "parent", path: "..", wantErr: "contains '..'"},
		{name: "leading parent", path: "../etc/passwd", wantErr: "contains '..'"},
		{name: "inner parent", path: "a/../../b", wantErr: "contains '..'"},
		{name: "trailing parent", path: "a/..", wantErr: "contains '..'"},
		{name: "absolute", path: "/etc/passwd", wantErr: "absolute"},
		{name: "root", path: "/", wantErr: "absolute"},
		{name: "NUL", path: "a\x00b.csv", wantErr: "NUL"},
		{name: "double slash", path: "a//b", wantErr: "empty or '.' element"},
		{name: "trailing slash", path: "dir/", wantErr: "empty or '.' element"},
		{name: "dot", path: ".", wantErr: "empty or '.' element"},
		{name: "leading dot element", path: "./a", wantErr: "empty or '.' element"},
		{name: "inner dot element", path: "a/./b", wantErr: "empty or '.' element"},
		{name: "element of 256 bytes", path: "d/" + long + "a", wantErr: "element is longer than 255 bytes"},
		{name: "1025 bytes", path: strings.Repeat("abc/", 255) + "abcde", wantErr: "longer than 1024 bytes"},
		{name: "very long", path: strings.Repeat("a/", 1<<16), wantErr: "longer than 1024 bytes"},
		{name: "invalid UTF-8", path: "\xff.csv", wantErr: "not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPath(tc.path)
			call := "CheckPath(" + abbrev(tc.path) + ")"
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("%s = %v, want nil", call, err)
				}
				return
			}
			ie := inputErr(t, call, err)
			if ie.Param != "path" {
				t.Errorf("%s Param = %q, want %q", call, ie.Param, "path")
			}
			if !strings.Contains(ie.Msg, tc.wantErr) || !strings.HasPrefix(ie.Msg, "invalid file path ") {
				t.Errorf("%s = %q, want \"invalid file path ...: ...%s...\"", call, ie.Msg, tc.wantErr)
			}
		})
	}
}

func TestLimitsResolve(t *testing.T) {
	small := Limits{Timeout: 10 * time.Second, MemoryBytes: 64 << 20, OutputBytes: 1000, FileBytes: 2000, Procs: 8, CPUMillis: 500}
	tests := []struct {
		name      string
		in        Limits
		def, max  Limits // zero: DefaultLimits, MaxLimits
		want      Limits // when wantParam is ""
		wantParam string
		wantMsg   string // substring of the message
	}{
		{name: "zero means the defaults", in: Limits{}, want: DefaultLimits},
		{
			name: "some set, the rest default",
			in:   Limits{Timeout: 5 * time.Second, MemoryBytes: 64 << 20},
			want: Limits{Timeout: 5 * time.Second, MemoryBytes: 64 << 20, OutputBytes: DefaultLimits.OutputBytes,
				FileBytes: DefaultLimits.FileBytes, Procs: DefaultLimits.Procs, CPUMillis: DefaultLimits.CPUMillis},
		},
		{name: "every field at its maximum", in: MaxLimits, want: MaxLimits},
		{name: "the smallest allowed", in: Limits{Timeout: 1, MemoryBytes: 16 << 20, OutputBytes: 1, FileBytes: 1, Procs: 4, CPUMillis: 1},
			want: Limits{Timeout: 1, MemoryBytes: 16 << 20, OutputBytes: 1, FileBytes: 1, Procs: 4, CPUMillis: 1}},
		{name: "other defaults", in: Limits{}, def: small, max: MaxLimits, want: small},

		{name: "negative timeout", in: Limits{Timeout: -time.Second}, wantParam: "timeout", wantMsg: "timeout must be positive"},
		{name: "negative memory", in: Limits{MemoryBytes: -1 << 20}, wantParam: "memory_limit_mb", wantMsg: "memory_limit_mb must be positive"},
		{name: "negative output", in: Limits{OutputBytes: -1}, wantParam: "output_limit_bytes", wantMsg: "must be positive"},
		{name: "negative file size", in: Limits{FileBytes: -1}, wantParam: "file_limit_bytes", wantMsg: "must be positive"},
		{name: "negative processes", in: Limits{Procs: -1}, wantParam: "max_processes", wantMsg: "must be positive"},
		{name: "negative CPU", in: Limits{CPUMillis: math.MinInt64}, wantParam: "cpu_millis", wantMsg: "must be positive"},

		{name: "huge timeout", in: Limits{Timeout: 24 * time.Hour}, wantParam: "timeout", wantMsg: "timeout is over the server's maximum of 10m0s"},
		{name: "largest timeout", in: Limits{Timeout: math.MaxInt64}, wantParam: "timeout", wantMsg: "over the server's maximum"},
		{name: "huge memory", in: Limits{MemoryBytes: 1 << 40}, wantParam: "memory_limit_mb", wantMsg: "memory_limit_mb is over the server's maximum of 4096 MiB"},
		{name: "huge output", in: Limits{OutputBytes: math.MaxInt64}, wantParam: "output_limit_bytes", wantMsg: "over the server's maximum of 16777216"},
		{name: "huge file size", in: Limits{FileBytes: 1 << 50}, wantParam: "file_limit_bytes", wantMsg: "over the server's maximum"},
		{name: "huge processes", in: Limits{Procs: 1_000_000}, wantParam: "max_processes", wantMsg: "over the server's maximum of 512"},
		{name: "huge CPU", in: Limits{CPUMillis: 64_000}, wantParam: "cpu_millis", wantMsg: "over the server's maximum of 2000"},
		{name: "one over another maximum", in: Limits{Timeout: 11 * time.Second}, def: small, max: small, wantParam: "timeout", wantMsg: "maximum of 10s"},

		{name: "too little memory", in: Limits{MemoryBytes: 1 << 20}, wantParam: "memory_limit_mb", wantMsg: "at least 16"},
		{name: "too few processes", in: Limits{Procs: 3}, wantParam: "max_processes", wantMsg: "at least 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			def, max := tc.def, tc.max
			if def == (Limits{}) {
				def = DefaultLimits
			}
			if max == (Limits{}) {
				max = MaxLimits
			}
			got, err := tc.in.resolve(def, max)
			if tc.wantParam == "" {
				if err != nil {
					t.Fatalf("%+v.resolve() error = %v, want nil", tc.in, err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("%+v.resolve() (-want +got):\n%s", tc.in, diff)
				}
				return
			}
			ie := inputErr(t, "resolve", err)
			if ie.Param != tc.wantParam || !strings.Contains(ie.Msg, tc.wantMsg) {
				t.Errorf("%+v.resolve() error = {Param: %q, Msg: %q}, want {Param: %q, Msg: ...%q...}",
					tc.in, ie.Param, ie.Msg, tc.wantParam, tc.wantMsg)
			}
		})
	}
}

// abbrev quotes s for a failure message, cut short when it is long.
func abbrev(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", s[:40], len(s))
	}
	return fmt.Sprintf("%q", s)
}
