# Decides whether the CUDA backend is built (TROUPE_CUDA = AUTO | ON | OFF) and
# sets TROUPE_HAVE_CUDA, TROUPE_CUDA_SOURCES and TROUPE_CUDA_LIBS. With CUDA, NCCL is
# looked for beside the toolkit: when found, TROUPE_HAVE_NCCL is ON and TROUPE_CUDA_LIBS
# carries the imported target troupe::nccl (header path, library and the compile
# definition TROUPE_HAVE_NCCL=1 for everything linking troupe_core).
set(TROUPE_HAVE_CUDA OFF)
set(TROUPE_HAVE_NCCL OFF)
set(TROUPE_CUDA_SOURCES "")
set(TROUPE_CUDA_LIBS "")
string(TOUPPER "${TROUPE_CUDA}" _troupe_cuda)
if(NOT _troupe_cuda MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "TROUPE_CUDA must be AUTO, ON or OFF, not '${TROUPE_CUDA}'")
endif()
if(NOT _troupe_cuda STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    if(NOT DEFINED CMAKE_CUDA_STANDARD)
      set(CMAKE_CUDA_STANDARD 17)
      set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(TROUPE_HAVE_CUDA ON)
    file(GLOB TROUPE_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/kernels/cuda/*.cu)
    set(TROUPE_CUDA_LIBS CUDA::cudart CUDA::cublas CUDA::cublasLt)
    # Every op has a CUDA implementation (kernels/cuda/<op>.cu): the op headers dispatch
    # to it. The definition reaches troupe_core itself and everything that links it.
    if(NOT TARGET troupe::cuda_kernels)
      add_library(troupe::cuda_kernels INTERFACE IMPORTED)
      set_target_properties(troupe::cuda_kernels PROPERTIES
        INTERFACE_COMPILE_DEFINITIONS TROUPE_HAVE_CUDA_KERNELS=1)
    endif()
    list(APPEND TROUPE_CUDA_LIBS troupe::cuda_kernels)
    message(STATUS "troupe: CUDA backend ON (${CMAKE_CUDA_COMPILER}, sm_${CMAKE_CUDA_ARCHITECTURES})")
    find_path(TROUPE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    find_library(TROUPE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
    if(TROUPE_NCCL_INCLUDE_DIR AND TROUPE_NCCL_LIBRARY)
      set(TROUPE_HAVE_NCCL ON)
      if(NOT TARGET troupe::nccl)
        add_library(troupe::nccl INTERFACE IMPORTED)
        set_target_properties(troupe::nccl PROPERTIES
          INTERFACE_INCLUDE_DIRECTORIES "${TROUPE_NCCL_INCLUDE_DIR}"
          INTERFACE_LINK_LIBRARIES "${TROUPE_NCCL_LIBRARY}"
          INTERFACE_COMPILE_DEFINITIONS TROUPE_HAVE_NCCL=1)
      endif()
      list(APPEND TROUPE_CUDA_LIBS troupe::nccl)
      message(STATUS "troupe: NCCL found (${TROUPE_NCCL_LIBRARY})")
    else()
      message(STATUS "troupe: NCCL not found: parallel::nccl_communicator is not built")
    endif()
  elseif(_troupe_cuda STREQUAL "ON")
    message(FATAL_ERROR "TROUPE_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    message(STATUS "troupe: CUDA backend OFF (no nvcc found)")
  endif()
else()
  message(STATUS "troupe: CUDA backend OFF (TROUPE_CUDA=OFF)")
endif()
# With the CUDA backend, TROUPE_HAVE_CUDA_KERNELS is defined (through troupe::cuda_kernels)
# and the op headers dispatch CUDA tensors to kernels/cuda/<op>.cu; without it a CUDA
# context given to an op throws backend_unavailable.
