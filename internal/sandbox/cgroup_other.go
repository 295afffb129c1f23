//go:build !linux

package sandbox

// NewCgroups returns ErrUnsupported: cgroups exist only on Linux.
func NewCgroups(parent string) (Cgroups, error) { return nil, ErrUnsupported }

// HostCeilings returns ErrUnsupported: it reads Linux's /proc.
func HostCeilings() (Limits, error) { return Limits{}, ErrUnsupported }

// CgroupInstance returns ErrUnsupported: cgroups exist only on Linux.
func CgroupInstance() (string, error) { return "", ErrUnsupported }

// SweepCgroups returns ErrUnsupported: cgroups exist only on Linux.
func SweepCgroups(base string) ([]SweptCgroup, error) { return nil, ErrUnsupported }
