// All row kernels: reductions, transforms, sampling and truncation filters (docs/kernels.md).
#pragma once

#include "cospec/kernels/filter.hpp"
#include "cospec/kernels/instruction_set.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/sample.hpp"
#include "cospec/kernels/transform.hpp"
