// The umbrella header: everything cospec offers. It only includes.
#pragma once

#include "cospec/errors.hpp"
#include "cospec/kernels.hpp"
#include "cospec/version.hpp"
